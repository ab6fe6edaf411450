"""Loading feedback and the training note in a real browser (issue #19): with no Hub reachable, a Hub load is
answered on the page within seconds by the short check, saying why; the Text tab's note under the training text
says which words become <unk> as the text changes; an adapter card shows its description and load report.
Screenshots land in test-artifacts/loading-*.png."""

import time

import pytest

from peft_core import hub
from tests.test_first_screen import ARTIFACTS, DESKTOP, browser_app, open_page  # noqa: F401 (a fixture)
from tests.test_hub_reach import QUICK_S, silent_endpoint

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_no_hub_the_page_says_so_within_seconds(browser_app, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(hub, "_reach", {"endpoint": None, "at": 0.0, "why": None})
    page = open_page(browser_app, DESKTOP)
    page.locator("#lora-repo-id input, #lora-repo-id textarea").first.fill("some-org/some-lora")
    with silent_endpoint(tmp_path) as endpoint:
        start = time.monotonic()
        page.get_by_role("button", name="Load adapter", exact=True).click()
        page.get_by_text("must come from the Hub, which is unreachable").first.wait_for(timeout=QUICK_S * 1000 + 3000)
        took = time.monotonic() - start
    assert took < QUICK_S + 2, f"the page answered after {took:.1f} s"
    assert endpoint in page.get_by_text("must come from the Hub, which is unreachable").first.inner_text()
    page.screenshot(path=ARTIFACTS / "loading-no-hub.png")
    page.context.close()


def test_the_training_note_names_unknown_words_as_the_text_changes(browser_app):  # noqa: F811
    page = open_page(browser_app, DESKTOP)
    page.get_by_role("tab", name="Text").click()
    page.get_by_text("Add a LoRA and train it").click()  # the accordion holding the training text
    note = page.locator("#train-note")
    # The prefilled example is in the bundled LM's words (test_text_page.py), not all in this suite's tiny LM's:
    # a text in this LM's words draws no warning, one with words it lacks names them.
    note.get_by_text("(a run trains on at most").wait_for()  # the prefilled example's note is up
    page.get_by_label("Text to learn").fill("the captain sails the pirate ship to the island . arr !")
    note.get_by_text("every word is in the model's vocabulary").wait_for()
    page.get_by_label("Text to learn").fill("the captain zorblax sails the ship qwfp zorblax")
    note.get_by_text("3 tokens are outside the model's vocabulary").wait_for()
    assert "`zorblax`" not in note.inner_text() and "zorblax" in note.inner_text()  # rendered as code, not raw
    page.screenshot(path=ARTIFACTS / "loading-train-note.png")
    page.context.close()


def test_a_card_shows_its_description_and_load_report(browser_app):  # noqa: F811
    page = open_page(browser_app, DESKTOP)
    # gradio 6 puts a Group's elem_id on its outer and its inner div (one card, two nested ids): the inner one
    card = page.locator("#adapter-card-lora_a").last
    card.get_by_text("peft layout; layers registered/named:").wait_for()
    card.get_by_text("A test LoRA.").wait_for()  # the first prose line of its model card
    page.screenshot(path=ARTIFACTS / "loading-card.png")
    page.context.close()
