"""The workbench in a real browser: JupyterLab on 127.0.0.1, Debian's headless Chromium driven
by Playwright (``executable_path``), a 1280 px wide window in JupyterLab's default layout (the
file browser open).

- ``01_quickstart`` (MobileNetV2): all cells run; a click on a heatmap cell pins that routine;
  *Retune* changes the plan table.
- ``05_detector`` (the PaddleOCR v4 detector unfused, ``FUSE=False``: its 330 ONNX nodes as
  layers, the largest graph the views must stay readable at; fused it is 117): each tab shot, with no figure or
  table reaching past the notebook's width (a figure may only scroll vertically in its pane);
  *Compare* shows the busy state (class ``wb-busy``, every button disabled, the status saying
  what is measured) while it runs, and the op breakdown gets ONNX Runtime's column.

Screenshots go to ``artifacts/browser/``.  The notebooks run at a small input size, JupyterLab
with its own settings and runtime folders in a temporary folder, so nothing of the user's is
read or written; the quickstart's profile database is temporary too, the detector's is kept in
pytest's cache folder (profiling its 330 layers from scratch takes 40-60 s on 2 busy cores, and
profiling is not what this test is about).
"""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from contextlib import contextmanager

from notebook_helpers import NOTEBOOKS, detector_path, with_parameters

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "workbench-browser-test"
#: JupyterLab's default layout on a laptop: the file browser open beside the notebook.
VIEWPORT = {"width": 1280, "height": 1100}

#: The heatmap's plotly div, found by the ``meta`` the view gives its layout.
HEATMAP = "[...document.querySelectorAll('.wb-workbench .js-plotly-plot')].find(gd => gd.layout.meta === 'wb-heatmap')"

#: In the heatmap: the first cell of a routine that applies to its layer, is not the plan's
#: choice there, and has another layout than the plan's choice (so the pin changes the plan);
#: its centre in page coordinates, from plotly's own axis mapping.
PICK_CELL = """(gd) => {
    const t = gd._fullData[0], fl = gd._fullLayout, box = gd.getBoundingClientRect();
    const chosen = {};
    gd._fullData[1].y.forEach((layer, k) => { chosen[layer] = gd._fullData[1].x[k]; });
    const layout = (d) => d.split(':')[2].split('/')[0];
    for (let i = 0; i < t.y.length; i++)
        for (let j = 0; j < t.x.length; j++) {
            const c = chosen[t.y[i]];
            if (Number.isFinite(t.z[i][j]) && c && t.x[j] !== c && layout(t.x[j]) !== layout(c)
                    && !t.x[j].endsWith('/reference'))
                return {layer: t.y[i], routine: t.x[j],
                        x: box.left + fl.xaxis._offset + fl.xaxis.l2p(j), y: box.top + fl.yaxis._offset + fl.yaxis.l2p(i)};
        }
    return null;
}"""

#: Bring the cell ``c`` (from PICK_CELL) into the heatmap's scrolling pane's view.
SCROLL_TO_CELL = """([gd, c]) => {
    const pane = gd.closest('.wb-heatmap-pane'), box = pane.getBoundingClientRect();
    pane.scrollTop += c.y - (box.top + box.height / 2);
}"""

#: Elements of the shown tab that reach past the notebook's output area (or the window): a
#: figure must fit its pane's width (it may scroll vertically only), a pane and anything not
#: in a pane must fit the output area.
OVERFLOW = """() => {
    const bench = document.querySelector('.wb-workbench');
    const out = bench.closest('.jp-OutputArea-output').getBoundingClientRect();
    const limit = Math.min(window.innerWidth, out.right) + 1;
    const bad = [];
    const name = (el) => el.className.baseVal ?? el.className;
    if (out.right > window.innerWidth + 1) bad.push(`output area ends at ${out.right} > ${window.innerWidth}`);
    for (const el of bench.querySelectorAll('.js-plotly-plot, table, .widget-html, .widget-box, .jupyter-button')) {
        const r = el.getBoundingClientRect();
        if (el.offsetParent === null || r.width === 0) continue;   // in a tab not shown
        const pane = el.closest('.wb-heatmap-pane, .wb-graph-pane, .wb-plan-pane, .wb-top-pane');
        if (pane && el.matches('.js-plotly-plot') && r.right > pane.getBoundingClientRect().right + 1)
            bad.push(`${el.layout?.meta ?? name(el)} is ${r.width} px wide in a pane of ${pane.clientWidth}`);
        const edge = pane ? pane.getBoundingClientRect().right : r.right;
        if (edge > limit) bad.push(`${pane ? name(pane) : name(el)} ends at ${edge} > ${limit}`);
    }
    return bad;
}"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(folder):
    """JupyterLab user settings: every cell rendered (no windowing), no news pop-up."""
    for plugin, text in [("notebook-extension/tracker", '{"windowingMode": "none"}'),
                         ("apputils-extension/notification", '{"fetchNews": "false"}')]:
        path = folder / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@contextmanager
def serve(tmp_path, name, nb):
    """A JupyterLab server on 127.0.0.1 serving ``tmp_path`` with ``nb`` as ``name``; yields
    the notebook's URL."""
    nbformat.write(nb, str(tmp_path / name))
    _settings(tmp_path / "settings")
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={tmp_path}", "--expose-app-in-browser"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, "JupyterLab exited: " + (tmp_path / "jupyterlab.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "JupyterLab did not listen within 60 s"
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/lab/tree/{name}?token={TOKEN}"
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture
def jupyterlab(tmp_path):
    nb = with_parameters(NOTEBOOKS / "01_quickstart.ipynb",
                         dict(MODEL="mobilenet_v2", RESOLUTION=64, PROFILE_DB=str(tmp_path / "profiles.sqlite"),
                              EXPORT_TO=str(tmp_path / "quickstart.tuned.onnx"), COMPARE_RUNS=3))
    with serve(tmp_path, "01_quickstart.ipynb", nb) as url:
        yield url


@pytest.fixture
def detector_lab(tmp_path, request):
    db = request.config.cache.mkdir("workbench-browser") / "detector-profiles.sqlite"
    nb = with_parameters(NOTEBOOKS / "05_detector.ipynb",
                         dict(MODEL_PATH=str(detector_path()), RESOLUTION=64, FUSE=False, PROFILE_DB=str(db)))
    with serve(tmp_path, "05_detector.ipynb", nb) as url:
        yield url


def run_all(browser, url):
    """A page in the default layout with the notebook at ``url``, every cell run; asserts no
    cell raised."""
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url)
    page.wait_for_function("window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel", timeout=90_000)
    page.evaluate("window.jupyterapp.shell.leftCollapsed && window.jupyterapp.commands.execute('filebrowser:activate')")
    page.wait_for_function("!window.jupyterapp.shell.leftCollapsed && document.querySelector('.jp-FileBrowser')?.offsetWidth > 100")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function("[...document.querySelectorAll('.jp-OutputArea-output')]"
                           ".some(e => e.innerText.includes('WORKBENCH_RESULTS'))", timeout=240_000)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] .jp-RenderedText, "
                          ".jp-OutputArea-output .ansi-red-fg").all_inner_texts()
    assert not [e for e in errors if "Traceback" in e or "not JSON compliant" in e], errors
    page.wait_for_function(HEATMAP + "?._fullData?.[0]?.z", timeout=60_000)
    return page


def shot(page, name, anchor=".wb-workbench .lm-TabBar"):
    """A screenshot of the window with ``anchor`` scrolled to its top: what a user sees, file
    browser and all (an element shot of the workbench would be cut at the notebook's panel)."""
    page.evaluate(f"document.querySelector({anchor!r}).scrollIntoView({{block: 'start'}})")
    page.screenshot(path=str(SHOTS / name))


def show_tab(page, title):
    page.locator(".wb-workbench .lm-TabBar-tab", has_text=title).click()
    page.wait_for_timeout(700)   # plotly relayouts a figure when its tab is shown
    page.evaluate("document.querySelector('.wb-workbench .lm-TabBar').scrollIntoView({block: 'start'})")


def test_quickstart_in_chromium_pin_by_click_and_retune(jupyterlab):
    from playwright.sync_api import sync_playwright
    assert CHROMIUM, "Debian's chromium is not installed (scripts/dev.sh test installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = run_all(browser, jupyterlab)
            page.wait_for_timeout(500)
            shot(page, "1_heatmap.png", ".wb-workbench")

            page.locator(".wb-workbench .lm-TabBar-tab", has_text="Summary").click()
            compared = page.inner_text(".wb-summary-table")   # the notebook ran Session.compare
            headline_before = page.inner_text(".wb-summary")
            shot(page, "1b_summary_compared.png")
            heatmap = page.evaluate_handle(HEATMAP)
            cell = page.evaluate(PICK_CELL, heatmap)
            assert cell is not None, "no heatmap cell with another layout than the plan's choice"
            page.locator(".wb-workbench .lm-TabBar-tab", has_text="Plan").click()
            plan_before = page.inner_text(".wb-plan-table")
            page.locator(".wb-workbench .lm-TabBar-tab", has_text="Profile").click()
            cell = page.evaluate(PICK_CELL, heatmap)   # the same cell, placed again now the tab is shown
            page.evaluate(SCROLL_TO_CELL, [heatmap, cell])
            cell = page.evaluate(PICK_CELL, heatmap)
            page.mouse.move(cell["x"], cell["y"])
            page.mouse.click(cell["x"], cell["y"])
            page.wait_for_function("document.querySelector('.wb-status').innerText.includes('pinned')", timeout=30_000)
            status = page.inner_text(".wb-status")
            assert f"pinned {cell['layer']} to {cell['routine']}" in status
            shot(page, "2_pinned_by_click.png", ".wb-status")

            page.locator("button.wb-retune").click()
            page.wait_for_function("document.querySelector('.wb-status').innerText.includes('retuned')", timeout=30_000)
            retuned = page.inner_text(".wb-status")
            headline_after = page.inner_text(".wb-summary")
            page.locator(".wb-workbench .lm-TabBar-tab", has_text="Plan").click()
            plan_after = page.inner_text(".wb-plan-table")
            row = page.inner_text(f".wb-plan-table tr[data-layer='{cell['layer']}']")
            shot(page, "3_plan_after_retune.png")
            page.locator(".wb-workbench .lm-TabBar-tab", has_text="DP table").click()
            dp = page.inner_text(".wb-dp")
            shot(page, "4_dp_table.png")
            page.locator(".wb-workbench .lm-TabBar-tab", has_text="Summary").click()
            shot(page, "5_summary.png")
        finally:
            browser.close()
    assert plan_after != plan_before
    assert cell["routine"] in row and "pinned" in row, row
    assert "1 pins" in retuned, retuned
    assert cell["routine"] in dp   # the selected (pinned) layer's DP table: only the pinned routine
    # measured side by side before the pin; the new plan's figures are predictions until compared again
    assert "onnxruntime" in compared and "measured side by side" in headline_before
    assert "Compare measures them" in headline_after


def test_detector_every_tab_fits_and_compare_shows_busy(detector_lab):
    from playwright.sync_api import sync_playwright
    assert CHROMIUM, "Debian's chromium is not installed (scripts/dev.sh test installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    overflow = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = run_all(browser, detector_lab)
            layers = page.evaluate(HEATMAP + "._fullData[0].y.length")
            for k, title in enumerate(["Profile", "Plan", "DP table", "Summary"]):
                show_tab(page, title)
                overflow[title] = page.evaluate(OVERFLOW)
                shot(page, f"detector_{k + 1}_{title.lower().replace(' ', '_')}.png")
            show_tab(page, "Profile")
            page.locator(".wb-workbench .widget-toggle-button", has_text="row's fastest").click()
            page.wait_for_function(HEATMAP + "._fullData[0].colorbar.title.text === 'x fastest'", timeout=30_000)
            overflow["Profile, relative"] = page.evaluate(OVERFLOW)
            shot(page, "detector_1b_profile_relative.png")

            show_tab(page, "Summary")
            page.fill(".wb-runs input", "1")
            page.press(".wb-runs input", "Enter")
            page.locator("button.wb-compare").scroll_into_view_if_needed()
            page.locator("button.wb-compare").click()
            page.wait_for_selector(".wb-workbench.wb-busy", timeout=30_000)
            busy = page.evaluate("""() => ({
                disabled: [...document.querySelectorAll('.wb-workbench button[class*="wb-"]')].map(b => b.disabled),
                status: document.querySelector('.wb-status').innerText})""")
            shot(page, "detector_5_busy_during_compare.png", ".wb-workbench")
            page.wait_for_function("document.querySelector('.wb-status').innerText.includes('compared')", timeout=240_000)
            after = page.evaluate("""() => ({
                busy: document.querySelector('.wb-workbench').classList.contains('wb-busy'),
                disabled: [...document.querySelectorAll('.wb-workbench button[class*="wb-"]')].map(b => b.disabled),
                headline: document.querySelector('.wb-summary').innerText,
                ops: document.querySelector('.wb-op-table').innerText})""")
            overflow["Summary, compared"] = page.evaluate(OVERFLOW)
            shot(page, "detector_6_summary_compared.png", ".wb-status")
        finally:
            browser.close()
    assert layers >= 250
    assert overflow == {k: [] for k in overflow}, overflow
    assert len(busy["disabled"]) >= 8 and all(busy["disabled"]), busy
    assert "measuring: tuned, greedy" in busy["status"] and "ONNX Runtime" in busy["status"], busy
    assert not after["busy"] and not any(after["disabled"]), after
    assert "1 runs" in after["headline"] and "not yet" not in after["headline"], after["headline"]
    assert "measured ORT ms" in after["ops"], after["ops"]


@pytest.fixture
def precision_lab(tmp_path):
    nb = with_parameters(NOTEBOOKS / "05_precision.ipynb",
                         dict(MODEL="resnet50", RESOLUTION=64, PROFILE_DB=str(tmp_path / "profiles.sqlite"), RUNS=0,
                              # a bfloat16 first layer reads the float32 input through a cast, whatever
                              # else the tuning (noisy under a loaded test run) picks: a cast to show
                              PIN=("conv1", "cpu:bfloat16:nhwc/im2col_bf16")))
    with serve(tmp_path, "05_precision.ipynb", nb) as url:
        yield url


def test_precision_plan_with_bfloat16_layers_and_casts(precision_lab):
    """05_precision (ResNet-50 with bfloat16 allowed): the headline gives the plan's precision and
    its error against float32; the plan table and graph show bfloat16 layers and the casts."""
    from playwright.sync_api import sync_playwright
    from workbench.runtime import cpu
    if cpu.kernel_module("gemm_bf16", "avx512bf16") is None:
        pytest.skip("this CPU lacks AVX512-BF16: the plan has no bfloat16 layer to show")
    assert CHROMIUM, "Debian's chromium is not installed (scripts/dev.sh test installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = run_all(browser, precision_lab)
            show_tab(page, "Summary")
            headline = page.inner_text(".wb-summary")
            shot(page, "6_precision_summary.png")
            show_tab(page, "Plan")
            table = page.inner_text(".wb-plan-table")
            shot(page, "7_precision_plan.png")
            graph = page.evaluate("[...document.querySelectorAll('.wb-workbench .js-plotly-plot')]"
                                  ".flatMap(gd => gd.data.map(t => t.name || ''))")
        finally:
            browser.close()
    assert "layer(s) in bfloat16" in headline and "cosine" in headline and "top-1 agreement" in headline
    assert "cpu:bfloat16:nhwc/" in table
    assert any("bfloat16" in name for name in graph), graph
    assert "float32:nhwc->bfloat16:nhwc" in table or "->bfloat16" in table, table[:2000]
