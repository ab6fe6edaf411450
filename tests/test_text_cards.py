"""The Text tab's adapter cards and preset cards in a real browser (issue #19, items 3 and 7).

Adapter cards: one per resident adapter with its facts; a tick changes the generated text; Delete asks inline,
Keep keeps, Delete deletes and the other cards keep their ticks; shared cards have no Delete. Preset cards:
captions shown whole, dark in dark mode, an unavailable one greyed with the reason and inert, an offline one
loads and shows generated text. Screenshots land in test-artifacts/text-cards-*.png.
"""

from pathlib import Path

import pytest

from peft_core import hub
from tests.conftest import launch_app
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
NO_HUB = "test: no Hub here"


@pytest.fixture(scope="module")
def browser_app(assets, lm_assets):
    """(browser, url): the app with two shared text adapters (the admin's), and Debian's Chromium. The Hub is
    unreachable for every page of this module (a fixed reason, not a network timeout)."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    patch = pytest.MonkeyPatch()
    patch.setattr(hub, "unreachable_reason", lambda: NO_HUB)
    try:
        with launch_app(assets, (), lm_assets, ("lora_a", "lora_b")) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser, url
            browser.close()
    finally:
        patch.undo()


def text_page(browser_app, theme: str = "light"):
    """A new visitor (a new session) on the Text tab, after the page's first load has drawn the cards."""
    browser, url = browser_app
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(url + f"?__theme={theme}")
    page.get_by_role("tab", name="Text (Transformers)").click()
    card(page, "lora_a").wait_for()
    return page


def card(page, name):
    # gradio 6 puts a Group's elem_id on its outer and its inner div (one card): the inner one
    return page.locator(f"#text-card-{name}").last


def tick(page, name):
    return card(page, name).get_by_role("checkbox", name=name, exact=True)


def ticked(page) -> list[str]:
    return sorted(n for n in card_names(page) if tick(page, n).is_checked())


def card_names(page) -> list[str]:
    return sorted(page.locator("#text-cards .gr-group[id^=text-card-]").evaluate_all(
        "els => [...new Set(els.map(e => e.id.slice('text-card-'.length)))]"))  # fmt: skip


def generate(page, until: str) -> str:
    """Press Generate text and return the output once `until` (a JS test of `text` and `old`) holds."""
    out = page.locator("#text-output textarea")
    old = out.input_value()
    page.get_by_role("button", name="Generate text", exact=True).click()
    page.wait_for_function(f"([el, old]) => {{ const text = el.value; return text.length > 0 && ({until}); }}",
                           arg=[out.element_handle(), old])  # fmt: skip
    return out.input_value()


def test_cards_show_the_facts_and_a_tick_changes_the_text(browser_app):
    page = text_page(browser_app)
    assert card_names(page) == ["lora_a", "lora_b"]
    facts = card(page, "lora_a").locator(".facts").first.inner_text()
    assert "lora-a @ main" in facts and "LORA" in facts and "r 4" in facts and "lora_alpha 8" in facts
    assert "targets " in facts and "q_proj" in facts
    for name in ("lora_a", "lora_b"):  # the admin's: shared, read-only to this visitor
        assert card(page, name).get_by_text("shared", exact=True).is_visible()
        assert card(page, name).get_by_role("button", name="Delete").count() == 0
        assert card(page, name).get_by_role("button", name="Export").count() == 0
    assert ticked(page) == ["lora_a"]  # the first adapter starts ticked

    tick(page, "lora_a").uncheck()
    base = generate(page, "true")  # nothing ticked: the base model's text
    tick(page, "lora_b").check()
    adapted = generate(page, "text !== old")  # times out if the tick did not reach the request
    assert adapted != base
    page.get_by_role("button", name="Use via API ▼").click()  # the snippet reads the ticks too
    page.locator("#text-snippet").get_by_text("['lora_b']").first.wait_for()
    page.get_by_label("Disable adapters (base output)").check()
    assert generate(page, "text !== old") == base  # the same request with adapters off is the base
    page.screenshot(path=ARTIFACTS / "text-cards-ticks.png", full_page=True)
    page.context.close()


def add_lora(page, name: str) -> None:
    if not page.get_by_role("button", name="Add LoRA", exact=True).is_visible():
        page.get_by_text("Add a LoRA and train it").first.click()
    page.get_by_label("adapter_name", exact=True).fill(name)
    page.get_by_role("button", name="Add LoRA", exact=True).click()
    card(page, name).wait_for()


def test_delete_asks_keep_keeps_delete_deletes(browser_app):
    """An own card's Delete asks inline first ("Delete x? [Delete] [Keep]"): Keep changes nothing, Delete removes
    the adapter and its card, and every other card keeps its tick."""
    page = text_page(browser_app)
    add_lora(page, "mine1")
    add_lora(page, "mine2")
    mine1 = card(page, "mine1")
    assert "added here, not trained yet" in mine1.locator(".facts").first.inner_text()
    assert mine1.get_by_text("shared", exact=True).count() == 0
    tick(page, "lora_b").check()
    tick(page, "mine1").check()
    tick(page, "mine2").check()
    assert ticked(page) == ["lora_a", "lora_b", "mine1", "mine2"]

    mine1.get_by_role("button", name="Delete", exact=True).click()
    question = mine1.get_by_text("Delete mine1?")
    question.wait_for()
    page.screenshot(path=ARTIFACTS / "text-cards-delete-asks.png", full_page=True)
    mine1.get_by_role("button", name="Keep", exact=True).click()
    question.wait_for(state="hidden")
    page.wait_for_timeout(500)
    assert card_names(page) == ["lora_a", "lora_b", "mine1", "mine2"]  # kept: nothing was asked of the server

    mine1.get_by_role("button", name="Delete", exact=True).click()
    question.wait_for()
    mine1.locator(".confirm-delete").get_by_role("button", name="Delete", exact=True).click()
    card(page, "mine1").wait_for(state="detached")
    assert card_names(page) == ["lora_a", "lora_b", "mine2"]
    assert ticked(page) == ["lora_a", "lora_b", "mine2"]  # the others' ticks, as they were
    assert sorted(page.locator("#text-ticks").evaluate("el => JSON.parse(el.innerText)")) == ticked(page)

    card(page, "mine2").get_by_role("button", name="Export", exact=True).click()  # an own card's Export
    exported = page.locator("#text-export").last.element_handle()  # the file's name shows as stem and suffix
    page.wait_for_function("el => /mine2\\s*\\.zip/.test(el.innerText)", arg=exported)
    page.context.close()


def test_training_keeps_the_ticks_and_the_card_says_so(browser_app):
    """A finished run redraws the cards: the trained one says how many steps, and every tick is as it was."""
    page = text_page(browser_app)
    add_lora(page, "tr")
    tick(page, "lora_b").check()
    before = ticked(page)
    assert before == ["lora_a", "lora_b"]  # "tr" was added unticked
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text("trained tr for").first.wait_for()
    card(page, "tr").get_by_text("added here, trained 60 steps", exact=False).wait_for()
    assert ticked(page) == before
    page.context.close()


def luminance(css_colour: str) -> float:
    """WCAG's relative luminance (0 black .. 1 white) of a computed `rgb(r, g, b)` / `rgba(...)` colour."""
    channels = (int(float(v)) / 255 for v in css_colour[css_colour.index("(") + 1 : -1].split(",")[:3])
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def preset(page, name: str):
    return page.locator("#text-presets button.preset-card").filter(has_text=name).first


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_preset_cards_are_captioned_and_follow_the_theme(browser_app, theme):
    page = text_page(browser_app, theme)
    pirate = preset(page, "Text: pirate")
    pirate.get_by_text("sprinkles 'arr'").wait_for()
    for button in page.locator("#text-presets button.preset-card").all():
        assert button.is_visible()
        clipped = button.evaluate("b => b.scrollWidth > b.clientWidth + 1 || b.scrollHeight > b.clientHeight + 1")
        assert not clipped, f"{button.inner_text()!r} is clipped"
    assert pirate.inner_text().splitlines() == ["Text: pirate", "sprinkles 'arr'"]
    background = luminance(pirate.evaluate("b => getComputedStyle(b).backgroundColor"))
    text = luminance(pirate.evaluate("b => getComputedStyle(b).color"))
    contrast = (max(background, text) + 0.05) / (min(background, text) + 0.05)
    assert contrast >= 4.5, f"caption contrast {contrast:.1f}:1 is below WCAG AA"
    if theme == "dark":
        assert background < 0.2 < text, f"a {background:.2f}-luminance card in dark mode"
    else:
        assert text < 0.2 < 0.6 < background, f"a {background:.2f}-luminance card in light mode"
    page.screenshot(path=ARTIFACTS / f"text-cards-presets-{theme}.png", full_page=True)
    page.context.close()


def test_a_greyed_preset_says_why_and_does_nothing(browser_app):
    page = text_page(browser_app)
    opt = preset(page, "OPT-350m + LoRA")
    opt.get_by_text(f"unavailable here: the Hub is unreachable ({NO_HUB})").wait_for()
    assert opt.is_disabled()
    model = page.get_by_text("tiny-lm @").first.inner_text()
    opt.click(force=True)  # as a user's click: a disabled button sends nothing
    page.wait_for_timeout(1500)
    assert page.get_by_text("tiny-lm @").first.inner_text() == model
    assert page.locator("#text-output textarea").input_value() == ""
    assert card_names(page) == ["lora_a", "lora_b"]
    page.context.close()


def test_an_offline_preset_loads_and_shows_text(browser_app):
    """Last in this module: the preset loads another base (the bundled tiny LM), which ends the others' adapters."""
    page = text_page(browser_app)
    preset(page, "Text: pirate").click()
    out = page.locator("#text-output textarea")
    page.wait_for_function("el => el.value.length > 0", arg=out.element_handle())
    card(page, "pirate").wait_for()
    assert ticked(page) == ["pirate"]
    assert page.locator("#text-prompt textarea").input_value() == "the red circle"
    assert "adapter-studio/tiny-shapes-lm" in page.get_by_text("adapter-studio/tiny-shapes-lm @").first.inner_text()
    page.screenshot(path=ARTIFACTS / "text-cards-preset-click.png", full_page=True)
    page.context.close()
