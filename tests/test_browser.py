"""The UI in a real browser: Debian's headless chromium, driven by chromium-driver."""
from __future__ import annotations

import shutil

import pytest

from tests.servers import gunicorn

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"),
]


@pytest.fixture(scope="module")
def server(demo_model):
    with gunicorn(demo_model) as (base, _):
        yield base


@pytest.fixture
def browser(server, tmp_path):
    """Chromium, closed before the server stops (fixtures tear down in reverse order)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No sandbox as root; no background networking: this machine has no internet.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.implicitly_wait(10)  # find_element waits for the page a click loads
    yield driver
    driver.quit()


def test_similar_word_form_submits_and_shows_results(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    assert "modelhost" in browser.title
    browser.find_element(By.ID, "word").send_keys("police")
    browser.find_element(By.CSS_SELECTOR, "form[action='/similar'] button").click()
    table = browser.find_element(By.ID, "results")  # only on the result page
    assert browser.find_element(By.TAG_NAME, "h2").text == "Words similar to “police”"
    assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == 10
    browser.save_screenshot(str(tmp_path / "result.png"))


def test_cluster_form_shows_a_validation_message(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    browser.find_element(By.ID, "text").send_keys("taliban")
    browser.find_element(By.CSS_SELECTOR, "form[action='/cluster'] button").click()
    assert "Too short" in browser.find_element(By.ID, "text-error").text
