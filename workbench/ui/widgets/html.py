"""HTML tables for the views that are tables (ipywidgets.HTML renders them)."""
from __future__ import annotations

import html
import math

STYLE = """<style>
.wb-table {border-collapse: collapse; font-size: 11px; font-family: monospace; line-height: 1.35}
.wb-table th, .wb-table td {border-bottom: 1px solid #ddd; padding: 1px 6px; text-align: left; white-space: nowrap}
.wb-table tr.wb-mark td {background: #fff3c4}
.wb-table tr.wb-pinned td {color: #a0007a}
</style>"""


def cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    if isinstance(value, (list, tuple)):
        return "<br>".join(html.escape(str(v)) for v in value)
    return html.escape(str(value))


def table(rows, columns, css_class, marked=None, row_class=None):
    """``rows`` (dicts) as an HTML table with ``columns`` ``[(key, header)]``; rows where
    ``marked(row)`` get class ``wb-mark``, and ``row_class(row)`` adds a class of its own."""
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in columns)
    body = []
    for row in rows:
        classes = []
        if marked is not None and marked(row):
            classes.append("wb-mark")
        if row_class is not None and row_class(row):
            classes.append(row_class(row))
        attrs = f' class="{" ".join(classes)}"' if classes else ""
        name = f' data-layer="{html.escape(str(row["name"]))}"' if "name" in row else ""
        body.append(f"<tr{attrs}{name}>" + "".join(f"<td>{cell(row.get(k))}</td>" for k, _ in columns) + "</tr>")
    return f'{STYLE}<table class="wb-table {css_class}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
