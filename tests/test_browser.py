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


@pytest.fixture
def browser(tmp_path):
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
    yield driver
    driver.quit()


def test_similar_word_form_submits_and_shows_results(browser, demo_model, tmp_path):
    from selenium.webdriver.common.by import By

    with gunicorn(demo_model) as (base, _):
        browser.get(base + "/")
        assert "modelhost" in browser.title
        browser.find_element(By.ID, "word").send_keys("police")
        browser.find_element(By.CSS_SELECTOR, "form[action='/similar'] button").click()
        rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
        assert browser.find_element(By.TAG_NAME, "h2").text == "Words similar to “police”"
        assert len(rows) == 10
        browser.save_screenshot(str(tmp_path / "result.png"))


def test_cluster_form_shows_a_validation_message(browser, demo_model):
    from selenium.webdriver.common.by import By

    with gunicorn(demo_model) as (base, _):
        browser.get(base + "/")
        browser.find_element(By.ID, "text").send_keys("taliban")
        browser.find_element(By.CSS_SELECTOR, "form[action='/cluster'] button").click()
        assert "Too short" in browser.find_element(By.ID, "text-error").text
