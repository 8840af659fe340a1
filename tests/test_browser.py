"""The workbench in a real browser: JupyterLab serving ``notebooks/01_quickstart`` on 127.0.0.1,
Debian's headless Chromium driven by Playwright (``executable_path``).  All cells run; a click on
a heatmap cell pins that routine; *Retune* changes the plan table.  Screenshots of each stage go
to ``artifacts/browser/``.

The notebook runs with a small model size (the parameters a user would pick for a quick look),
a profile database in a temporary folder, and JupyterLab with its own settings and runtime
folders there too, so nothing of the user's is read or written.
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

from notebook_helpers import NOTEBOOKS, with_parameters

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "workbench-browser-test"

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


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving ``tmp_path``; yields its base URL."""
    nb = with_parameters(NOTEBOOKS / "01_quickstart.ipynb",
                         dict(MODEL="mobilenet_v2", RESOLUTION=64, PROFILE_DB=str(tmp_path / "profiles.sqlite"),
                              EXPORT_TO=str(tmp_path / "quickstart.tuned.onnx"), COMPARE_RUNS=3))
    nbformat.write(nb, str(tmp_path / "01_quickstart.ipynb"))
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
    url = f"http://127.0.0.1:{port}"
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
        yield url
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_quickstart_in_chromium_pin_by_click_and_retune(jupyterlab):
    from playwright.sync_api import sync_playwright
    assert CHROMIUM, "Debian's chromium is not installed (scripts/dev.sh test installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1900})
            page.goto(f"{jupyterlab}/lab/tree/01_quickstart.ipynb?token={TOKEN}")
            page.wait_for_function("window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel",
                                   timeout=90_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function("[...document.querySelectorAll('.jp-OutputArea-output')]"
                                   ".some(e => e.innerText.includes('WORKBENCH_RESULTS'))", timeout=240_000)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] .jp-RenderedText, "
                                  ".jp-OutputArea-output .ansi-red-fg").all_inner_texts()
            assert not [e for e in errors if "Traceback" in e], errors
            page.wait_for_function(HEATMAP + "?._fullData?.[0]?.z", timeout=60_000)
            bench = page.locator(".wb-workbench")
            bench.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            bench.screenshot(path=str(SHOTS / "1_heatmap.png"))
            page.screenshot(path=str(SHOTS / "0_notebook.png"))

            page.locator(".wb-workbench .lm-TabBar-tab", has_text="Summary").click()
            compared = page.inner_text(".wb-summary-table")   # the notebook ran Session.compare
            headline_before = page.inner_text(".wb-summary")
            bench.screenshot(path=str(SHOTS / "1b_summary_compared.png"))
            heatmap = page.evaluate_handle(HEATMAP)
            cell = page.evaluate(PICK_CELL, heatmap)
            assert cell is not None, "no heatmap cell with another layout than the plan's choice"
            page.locator(".wb-workbench .lm-TabBar-tab", has_text="Plan").click()
            plan_before = page.inner_text(".wb-plan-table")
            page.locator(".wb-workbench .lm-TabBar-tab", has_text="Profile").click()
            cell = page.evaluate(PICK_CELL, heatmap)   # the same cell, placed again now the tab is shown
            page.mouse.move(cell["x"], cell["y"])
            page.mouse.click(cell["x"], cell["y"])
            page.wait_for_function("document.querySelector('.wb-status').innerText.includes('pinned')", timeout=30_000)
            status = page.inner_text(".wb-status")
            assert f"pinned {cell['layer']} to {cell['routine']}" in status
            bench.screenshot(path=str(SHOTS / "2_pinned_by_click.png"))

            page.locator("button.wb-retune").click()
            page.wait_for_function("document.querySelector('.wb-status').innerText.includes('retuned')", timeout=30_000)
            retuned = page.inner_text(".wb-status")
            headline_after = page.inner_text(".wb-summary")
            page.locator(".wb-workbench .lm-TabBar-tab", has_text="Plan").click()
            plan_after = page.inner_text(".wb-plan-table")
            row = page.inner_text(f".wb-plan-table tr[data-layer='{cell['layer']}']")
            bench.screenshot(path=str(SHOTS / "3_plan_after_retune.png"))
            page.locator(".wb-workbench .lm-TabBar-tab", has_text="DP table").click()
            dp = page.inner_text(".wb-dp")
            bench.screenshot(path=str(SHOTS / "4_dp_table.png"))
            page.locator(".wb-workbench .lm-TabBar-tab", has_text="Summary").click()
            bench.screenshot(path=str(SHOTS / "5_summary.png"))
        finally:
            browser.close()
    assert plan_after != plan_before
    assert cell["routine"] in row and "pinned" in row, row
    assert "1 pins" in retuned, retuned
    assert cell["routine"] in dp   # the selected (pinned) layer's DP table: only the pinned routine
    # measured side by side before the pin; the new plan's figures are predictions until compared again
    assert "onnxruntime" in compared and "measured side by side" in headline_before
    assert "Compare measures them" in headline_after
