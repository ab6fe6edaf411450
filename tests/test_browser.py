"""Smoke test in a real browser: Debian's Chromium driven by playwright loads the page and makes an image."""

import shutil
from pathlib import Path

import pytest

from tests.conftest import launch_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def page(assets):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run the README's test command, which installs it")
    with launch_app(assets, adapters=("lora_a", "lora_b")) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.console_errors = []
        page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
        page.goto(url)
        page.get_by_role("button", name="Generate").wait_for()
        yield page
        browser.close()


def image_src(page, elem_id: str) -> str:
    img = page.locator(f"#{elem_id} img")
    img.wait_for(timeout=60_000)
    return img.get_attribute("src")


def test_generate_shows_an_image(page):
    ARTIFACTS.mkdir(exist_ok=True)
    table = page.locator("#adapter-table")
    for text in ("lora_a", "lora_b", "sks style"):  # adapter names and the trigger words from the card
        assert table.get_by_text(text, exact=True).count() >= 1
    page.get_by_role("button", name="Generate").click()
    src = image_src(page, "image")
    assert src
    size = page.locator("#image img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [32, 32]
    page.screenshot(path=ARTIFACTS / "browser-generate.png", full_page=True)
    assert not [e for e in page.console_errors if "favicon" not in e]
