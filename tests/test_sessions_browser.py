"""Two visitors in two Chromium contexts on one app (#18): each sees the shared adapters and their own, may give
theirs the same name as the other's, deleting one's leaves the other's, and closing a tab frees what it held."""

import os
import time

import pytest

from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT, card, click, image_bytes, resident_names, shot
from tests.test_sessions import served

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def visitor(browser, url):
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(url)
    page.get_by_role("button", name="Generate", exact=True).wait_for()
    card(page, "shared_a").wait_for()
    return page


def load(page, path, name):
    page.locator("#lora-repo-id textarea, #lora-repo-id input").first.fill(path)
    page.locator("#lora-adapter-name textarea, #lora-adapter-name input").first.fill(name)
    click(page, "Load adapter")
    card(page, name).wait_for()


def test_two_browser_sessions_keep_their_own_adapters(assets, lm_assets, monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("STUDIO_LOCAL_DIRS", os.pathsep.join(str(a["root"]) for a in (assets, lm_assets)))
    with served(assets, lm_assets) as (url, images, _, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        one, two = visitor(browser, url), visitor(browser, url)
        load(one, str(assets["lora_b"]), "mine")
        assert resident_names(one) == ["mine", "shared_a"]
        two.reload()  # what the server lists to this session now
        card(two, "shared_a").wait_for()
        assert resident_names(two) == ["shared_a"]
        load(two, str(assets["lora_b"]), "mine")  # the same name: each session has its own (one set of weights)
        assert len(images.slots.residents) == 2
        shot(two, "sessions-two")
        card(one, "mine").get_by_role("button", name="Delete").click()
        card(one, "mine").wait_for(state="detached")
        # two's "mine" is still there and usable: a generation with it ticked gives an image, no error
        card(two, "mine").get_by_role("checkbox", name="mine").check()
        click(two, "Generate")
        assert image_bytes(two, "image")
        assert two.get_by_text("not loaded").count() == 0
        assert resident_names(two) == ["mine", "shared_a"] and len(images.slots.residents) == 2
        two.context.close()  # the tab goes: gradio's unload ends its session, and nobody holds lora_b any more
        for _ in range(int(TIMEOUT / 100)):
            if len(images.slots.residents) == 1:
                break
            time.sleep(0.1)
        assert list(images.slots.residents) == ["shared_a"]
        browser.close()


def test_delete_then_undo_in_the_browser_gives_the_same_image(assets, lm_assets, monkeypatch):
    """A visitor's own adapter, ticked at 0.6: Delete takes its card away and offers Undo; Undo brings the card back
    ticked at 0.6, and Generate gives the same image, byte for byte."""
    from playwright.sync_api import sync_playwright

    from tests.test_browser import set_weight

    monkeypatch.setenv("STUDIO_LOCAL_DIRS", os.pathsep.join(str(a["root"]) for a in (assets, lm_assets)))
    with served(assets, lm_assets) as (url, _, _, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = visitor(browser, url)
        load(page, str(assets["lora_b"]), "mine")
        card(page, "shared_a").get_by_role("checkbox", name="shared_a").uncheck()
        card(page, "mine").get_by_role("checkbox", name="mine").check()
        set_weight(page, "mine", 0.6)
        click(page, "Generate")
        before = image_bytes(page, "image")
        card(page, "mine").get_by_role("button", name="Delete").click()
        card(page, "mine").wait_for(state="detached")
        undo = page.locator("#undo-delete")
        undo.get_by_text("Undo: delete mine").wait_for()
        click(page, "Generate")
        without = image_bytes(page, "image", before)  # the mix is now empty: the base image
        assert without != before
        undo.click()
        card(page, "mine").wait_for()
        undo.wait_for(state="hidden")
        assert card(page, "mine").get_by_role("checkbox", name="mine").is_checked()
        assert card(page, "mine").locator('input[type="number"]').input_value() == "0.6"
        shot(page, "undo-delete")
        click(page, "Generate")
        assert image_bytes(page, "image", without) == before
        browser.close()
