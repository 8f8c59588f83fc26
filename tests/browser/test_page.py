"""The page to try longread (``http.ui``), in a real browser: Debian's headless Chromium, driven
through its chromedriver by Selenium, against a real gateway on loopback (the emulator
upstream). The page speaks Connect's JSON form over fetch, so this is also the browser's view
of the Connect face: CORS-free same-origin calls, streaming envelopes read as they arrive.

It pastes a long report, asks Estimate (the table of models), picks a model that needs
map-reduce, streams the analysis and checks the plan, every stage's progress and the answer
against the gateway's own result. The screenshot is written to ``build/test-artifacts`` (its
path printed) so a person can look at what the page showed. `.ci/run` installs the browser.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from longread_sandbox import Sandbox
from longread_sandbox.sample import DEMO_QUESTION, generate_report
from longread_server.app import Gateway, start
from longread_server.config import HttpConfig, TenantConfig
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import gateway_config

KEY = "test-key-page"
MODEL = "openai/gpt-4o-mini"  # 128K context: the report below needs map-reduce
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
WAIT_S = 120


def browser() -> webdriver.Chrome:
    exe, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if exe is None or driver is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    # --no-sandbox: CI runs as root, where Chromium's own sandbox refuses to start.
    args = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1600")
    for arg in args:
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope="module")
async def page_gateway(sandbox: Sandbox) -> AsyncIterator[Gateway]:
    cfg = gateway_config(
        sandbox,
        tenants=[TenantConfig(name="page", api_keys=[KEY])],
        http=HttpConfig(listen="127.0.0.1:0", ui=True),
    )
    gw = await start(cfg)
    yield gw
    await gw.stop(0.5)


@dataclass
class Seen:
    """What the page showed."""

    title: str = ""
    candidates: list[list[str]] = field(default_factory=list)
    plan: str = ""
    stages: dict[str, tuple[int, int]] = field(default_factory=dict)
    answer: str = ""
    result: str = ""
    error: str = ""
    console: list[str] = field(default_factory=list)


def fill(driver: webdriver.Chrome, element_id: str, text: str) -> None:
    # send_keys types a character at a time; a long document goes in as a paste would.
    driver.execute_script(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event('input'));",
        element_id,
        text,
    )


def use_page(url: str, document: str, screenshot: Path) -> Seen:
    driver = browser()
    seen = Seen()
    try:
        wait = WebDriverWait(driver, WAIT_S)
        driver.get(url)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        seen.title = driver.title
        fill(driver, "document", document)
        fill(driver, "instruction", DEMO_QUESTION)

        driver.find_element(By.ID, "estimate").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#candidates tr"))
        for row in driver.find_elements(By.CSS_SELECTOR, "#candidates tr"):
            seen.candidates.append([td.text for td in row.find_elements(By.TAG_NAME, "td")])

        Select(driver.find_element(By.ID, "model")).select_by_value(MODEL)
        driver.find_element(By.ID, "analyze").click()
        wait.until(
            lambda d: (
                d.find_element(By.TAG_NAME, "body").get_attribute("data-done")
                or d.find_element(By.ID, "error").is_displayed()
            )
        )
        seen.error = driver.find_element(By.ID, "error").text
        seen.plan = driver.find_element(By.ID, "plan").text
        for row in driver.find_elements(By.CSS_SELECTOR, "#stages .stage"):
            bar = row.find_element(By.TAG_NAME, "progress")
            done, of = bar.get_attribute("value"), bar.get_attribute("max")
            name = str(row.get_attribute("data-stage"))
            seen.stages[name] = (int(float(done or 0)), int(float(of or 0)))
        seen.answer = driver.find_element(By.ID, "answer").text
        seen.result = driver.find_element(By.ID, "result").text
        # The whole page, not the window: grow the window to the page's height.
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1200, int(height) + 200)
        driver.save_screenshot(str(screenshot))
        logs: list[dict[str, Any]] = cast(Any, driver).get_log("browser")  # untyped in selenium
        seen.console = [e["message"] for e in logs if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    return seen


async def test_the_page_estimates_and_streams_a_map_reduce_analysis(page_gateway: Gateway) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "page.png"
    url = f"http://127.0.0.1:{page_gateway.http_port}/#key={KEY}"
    report = generate_report(900_000)  # about 180K tokens: over the model's 128K
    seen = await asyncio.to_thread(use_page, url, report, shot)
    print(f"\nscreenshot of the page: {shot}")
    assert not seen.error, seen.error
    assert not seen.console, seen.console
    assert seen.title.startswith("longread")
    models = [row[0] for row in seen.candidates]
    assert MODEL in models, models
    assert seen.plan.startswith(f"map_reduce with {MODEL}"), seen.plan
    # Every stage the plan ran, each call of it done.
    assert {"map", "reduce"} <= set(seen.stages), seen.stages
    assert all(done == of and of > 0 for done, of in seen.stages.values()), seen.stages
    assert len(seen.answer) > 40 and "cost $" in seen.result, (seen.answer, seen.result)
    assert shot.stat().st_size > 10_000


async def test_the_page_shows_a_refused_key_as_the_gateways_error(page_gateway: Gateway) -> None:
    url = f"http://127.0.0.1:{page_gateway.http_port}/#key=not-a-key"

    def refused() -> str:
        driver = browser()
        try:
            driver.get(url)
            wait = WebDriverWait(driver, WAIT_S)
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
            fill(driver, "document", "A short note.")
            fill(driver, "instruction", "What is it?")
            driver.find_element(By.ID, "estimate").click()
            wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
            return str(driver.find_element(By.ID, "error").text)
        finally:
            driver.quit()

    text = await asyncio.to_thread(refused)
    assert text.startswith("unauthenticated:"), text
