"""report.html in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium): it loads
with no console errors and no network, the summary table sorts, and the sample browser shows responses.

Skipped where no Chromium is installed, unless COTBENCH_REQUIRE_BROWSER=1 (set by .ci/run), where that fails."""
import re
import shutil

import pytest

from cotbench.report.html import write_html_report
from cotbench.report.plots import plot_curves, plot_lengths
from cotbench.report.tables import summary_frame
from report_samples import sweep

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture()
def browser():
    if not (CHROMIUM and DRIVER):
        from conftest import unavailable

        unavailable("BROWSER", "chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _report(tmp_path):
    samples = sweep(ungraded_at=1.0, n_ungraded=3)
    summary = summary_frame(samples, 0.1)
    plots = plot_curves(summary, tmp_path) + plot_lengths(samples, tmp_path)
    return write_html_report(tmp_path, summary, samples, {"config": {"tasks": ["arithmetic"]}},
                             [p for p in plots if p.suffix == ".svg"])


def test_report_html_loads_sorts_and_browses_samples(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page = _report(tmp_path)
    text = page.read_text(encoding="utf-8")
    # self-contained: nothing fetched (SVG's xmlns names are identifiers, not requests)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text) and "<link" not in text
    browser.get(page.as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    assert len(browser.find_elements(By.CSS_SELECTOR, ".plots svg")) >= 3  # curves and lengths, inline

    headers = browser.find_elements(By.CSS_SELECTOR, "#summary th")
    labels = [h.text for h in headers]
    accuracy = headers[labels.index("accuracy %")]

    def column():
        i = labels.index("accuracy %")
        return [float(r.find_elements(By.TAG_NAME, "td")[i].text)
                for r in browser.find_elements(By.CSS_SELECTOR, "#summary tbody tr")]

    accuracy.click()
    assert column() == sorted(column()) and len(column()) == 3
    accuracy.click()
    assert column() == sorted(column(), reverse=True)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#summary tr.incomplete")) == 1

    select = Select(browser.find_element(By.ID, "problem"))
    assert len(select.options) == 30
    select.select_by_index(4)
    cells = browser.find_elements(By.CSS_SELECTOR, "#responses .cell")
    assert len(cells) == 3  # one response per α, side by side
    assert "tokens" in cells[0].text and "\\boxed" in cells[0].text
    assert any("correct" in c.text for c in cells) and any("wrong" in c.text for c in cells)

    flips = browser.find_element(By.ID, "flips")
    flips.click()
    kept = len(Select(browser.find_element(By.ID, "problem")).options)
    # verdicts per problem i: α=0 right when i % 3 == 0, α=0.5 when i % 3 != 2, α=1 when i % 10 == 0 (ungraded
    # for i < 3, which counts as no verdict)
    expected = sum(1 for i in range(30) if len({i % 3 == 0, i % 3 != 2, *([i % 10 == 0] if i >= 3 else [])}) > 1)
    assert kept == expected < 30
    assert browser.find_element(By.ID, "count").text == f"{kept} problems"
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


HOSTILE = "so <!--<script>document.title='pwned'</script> </script><b>\\boxed{1}</b> -->"


def test_a_response_holding_markup_is_shown_as_text_and_stops_nothing(browser, tmp_path):
    """The sample data sits in a script block; a response with "<!--<script>" or "</script>" must neither end
    it nor change how it is parsed: the page runs, and the response shows as the text it is."""
    from dataclasses import replace

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    samples = sweep()
    samples[0] = replace(samples[0], generation=replace(samples[0].generation, text=HOSTILE))
    summary = summary_frame(samples, 0.1)
    page = write_html_report(tmp_path, summary, samples, {"config": {"tasks": ["arithmetic"]}}, [])
    browser.get(page.as_uri())
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert browser.title == "cotbench report"
    Select(browser.find_element(By.ID, "problem")).select_by_index(0)
    cells = browser.find_elements(By.CSS_SELECTOR, "#responses .cell")
    assert len(cells) == 3 and any("<!--<script>" in c.text for c in cells)
