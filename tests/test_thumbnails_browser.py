"""The image cards' pictures and the shared cards' tag in a real browser (issue #19 item 3): a card shows its picture
after it appears, an adapter loaded from the page gets one too and its own Delete, and a shared card (the Space's,
which a visitor cannot delete) shows a "shared" tag instead of Delete. Screenshots land in test-artifacts/cards-*.png.
"""

import pytest

from tests.test_first_screen import ARTIFACTS, DESKTOP, PHONE, browser_app, open_page  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def card(page, name: str):
    # gradio 6 puts a Group's elem_id on its outer and its inner div (one card, two nested ids): the inner one
    return page.locator(f"#adapter-card-{name}").last


def test_cards_show_pictures_and_shared_cards_no_delete(browser_app, assets):  # noqa: F811
    page = open_page(browser_app, DESKTOP)
    shared = card(page, "lora_a")
    shared.locator(".thumbnail img").first.wait_for()  # made after the page loaded, then drawn on the card
    assert shared.get_by_text("shared", exact=True).is_visible()
    assert shared.get_by_role("button", name="Delete").count() == 0
    page.locator("#lora-repo-id input, #lora-repo-id textarea").first.fill(str(assets["lora_b"]))
    page.locator("#lora-adapter-name input, #lora-adapter-name textarea").first.fill("from_page")
    page.get_by_role("button", name="Load adapter", exact=True).click()
    mine = card(page, "from_page")
    mine.get_by_role("button", name="Delete").wait_for()  # the card comes at once, with its own Delete
    mine.locator(".thumbnail img").first.wait_for()  # and its picture after
    box = mine.locator(".thumbnail img").first.bounding_box()
    assert box["width"] <= 64 and box["height"] <= 64  # compact: a small picture beside the controls
    src = mine.locator(".thumbnail img").first.get_attribute("src")
    assert page.request.get(src).ok
    page.screenshot(path=ARTIFACTS / "cards-desktop.png")
    page.context.close()


def test_the_phone_card_stays_compact(browser_app):  # noqa: F811
    page = open_page(browser_app, PHONE)
    shared = card(page, "lora_a")
    shared.locator(".thumbnail img").first.wait_for()
    shared.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "cards-phone.png")
    picture = shared.locator(".thumbnail img").first.bounding_box()
    tick = shared.get_by_role("checkbox", name="lora_a").bounding_box()
    assert picture["x"] + picture["width"] <= tick["x"] and abs(picture["y"] - tick["y"]) < 40, (picture, tick)
    page.context.close()
