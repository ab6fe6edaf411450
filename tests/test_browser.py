"""The user's journey in a real browser: Debian's Chromium driven by playwright, asserting on what the page shows.

Screenshots of each step land in test-artifacts/ so a person can look at what the test saw.
"""

import io
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from peft_core.image.sweep import CELL_MIN_PX, HEADER_PX, PAD
from tests.conftest import launch_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT = 90_000  # ms; the machine may be busy


@pytest.fixture(scope="module")
def page(assets, lm_assets):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run the README's test command, which installs it")
    ARTIFACTS.mkdir(exist_ok=True)
    with launch_app(assets, ("lora_a",), lm_assets, ("lora_a",)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
        page.set_default_timeout(TIMEOUT)
        page.console_errors = []
        page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
        page.goto(url)
        page.get_by_role("button", name="Generate", exact=True).wait_for()
        page.assets = assets
        yield page
        browser.close()


def shot(page, name):
    page.screenshot(path=ARTIFACTS / f"browser-{name}.png", full_page=True)


def image_bytes(page, elem_id: str, previous: bytes | None = None) -> bytes:
    """The PNG shown in #elem_id, waiting until it differs from `previous` (a new result arrived)."""
    img = page.locator(f"#{elem_id} img").first
    img.wait_for()
    for _ in range(int(TIMEOUT / 250)):
        src = img.get_attribute("src")
        body = page.request.get(src).body() if src else b""
        if body and body != previous:
            return body
        page.wait_for_timeout(250)
    raise AssertionError(f"#{elem_id} did not show a new image")


def click(page, name):
    page.get_by_role("button", name=name, exact=True).click()


def card(page, name):
    """The card of one resident adapter: its facts, active checkbox, weight slider and delete button."""
    return page.locator(f"#adapter-card-{name}").first


def set_weight(page, name, weight: float):
    card(page, name).locator('input[type="range"]').fill(str(weight))
    number = card(page, name).locator('input[type="number"]')
    page.wait_for_function("([el, w]) => Number(el.value) === w", arg=[number.element_handle(), weight])


def resident_names(page) -> list[str]:
    return sorted(page.locator("#adapter-cards .gr-group[id^=adapter-card-]").evaluate_all(
        "els => [...new Set(els.map(e => e.id.slice('adapter-card-'.length)))]"))  # fmt: skip


def test_generate_load_weight_disable_compare(page):
    card(page, "lora_a").wait_for()
    assert card(page, "lora_a").get_by_text("sks style").count() >= 1  # trigger words from the model card
    assert card(page, "lora_a").get_by_role("checkbox", name="lora_a").is_checked()  # the first starts active

    click(page, "Generate")
    adapted = image_bytes(page, "image")
    size = page.locator("#image img").first.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [32, 32]
    shot(page, "1-generate")

    # Load a second adapter by its id (an allowed local folder here; a Hub id works the same way).
    page.locator("#lora-repo-id textarea, #lora-repo-id input").first.fill(str(page.assets["lora_b"]))
    page.locator("#lora-adapter-name textarea, #lora-adapter-name input").first.fill("second")
    click(page, "Load adapter")
    card(page, "second").wait_for()
    page.locator("#adapter-load-status").get_by_text("Loaded second from").wait_for()
    assert not card(page, "second").get_by_role("checkbox", name="second").is_checked()

    # Move lora_a's weight slider: the image changes.
    set_weight(page, "lora_a", 0.3)
    click(page, "Generate")
    weighted = image_bytes(page, "image", adapted)
    shot(page, "2-weight")

    # The disable toggle gives the base; compare shows base and adapted side by side with the same seed.
    page.locator("#disable-lora input").check()
    click(page, "Generate")
    base = image_bytes(page, "image", weighted)
    page.locator("#disable-lora input").uncheck()
    click(page, "Compare base vs adapted")
    assert image_bytes(page, "base") == base
    assert image_bytes(page, "adapted") == weighted
    shot(page, "3-compare")


def test_sweep_grid(page):
    page.get_by_text("X/Y sweep: adapter weights").click()
    values = page.locator("#sweep-x-values textarea, #sweep-x-values input").first
    # The accordion gives its boxes their defaults as it opens; a fill that lands first was overwritten once.
    page.wait_for_function(
        "() => document.querySelector('#sweep-x-values textarea, #sweep-x-values input')?.value === '-1:1.5:6'"
    )
    # The accordion's first render may still put its default back over a fill that lands early (seen on a busy
    # machine, ~1 run in 10): type again until the box keeps what was typed, as a user would.
    for _ in range(20):
        values.fill("0, 0.5, 1")
        values.press("Tab")  # the change reaches the app before the click (else the default -1:1.5:6 may run)
        page.wait_for_timeout(250)
        if values.input_value() == "0, 0.5, 1":
            break
    assert values.input_value() == "0, 0.5, 1"
    click(page, "Run sweep")
    # One PNG: a header row over three enlarged cells, one per weight (lora_a=0, 0.5, 1), all different.
    sheet = np.asarray(Image.open(io.BytesIO(image_bytes(page, "sweep-grid"))).convert("L"))
    top, cw = HEADER_PX + 2 * PAD, CELL_MIN_PX
    assert sheet.shape == (top + cw, 3 * cw)
    columns = [sheet[:, j * cw : (j + 1) * cw] for j in range(3)]
    assert all((c[:top] < 200).sum() > 10 for c in columns)  # a header over each column
    assert len({c[top:].tobytes() for c in columns}) == 3
    page.locator("#prompt-sent").get_by_text("other adapters on: none").wait_for()
    shot(page, "4-sweep")


def choose(page, elem_id: str, option: str):
    """Pick `option` (its label) in the dropdown #elem_id, as a user does: open it, click the entry."""
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_function("([id, v]) => document.querySelector(`#${id} input`)?.value === v", arg=[elem_id, option])


def test_sweep_over_the_seed(page):
    """The seed on X: one PNG whose column headers read seed=0, seed=1, seed=2 (drawn as the core draws them) over
    three different images."""
    from PIL import ImageDraw

    from peft_core.image.sweep import _font

    values = page.locator("#sweep-x-values textarea, #sweep-x-values input").first
    if not values.is_visible():  # run alone: the accordion is still closed
        page.get_by_text("X/Y sweep: adapter weights").click()
        page.wait_for_function(
            "() => document.querySelector('#sweep-x-values textarea, #sweep-x-values input')?.value === '-1:1.5:6'"
        )
    previous = image_bytes(page, "sweep-grid") if page.locator("#sweep-grid img").count() else None
    choose(page, "sweep-x", "seed")
    for _ in range(20):  # as in test_sweep_grid: type again until the box keeps what was typed
        values.fill("0, 1, 2")
        values.press("Tab")
        page.wait_for_timeout(250)
        if values.input_value() == "0, 1, 2":
            break
    assert values.input_value() == "0, 1, 2"
    click(page, "Run sweep")
    sheet = np.asarray(Image.open(io.BytesIO(image_bytes(page, "sweep-grid", previous))).convert("RGB"))
    top, cw = HEADER_PX + 2 * PAD, CELL_MIN_PX
    assert sheet.shape[:2] == (top + cw, 3 * cw)
    for j in range(3):
        box = Image.new("RGB", (cw, top), "white")
        ImageDraw.Draw(box).text((cw / 2, top / 2), f"seed={j}", fill="black", font=_font(), anchor="mm")
        assert np.array_equal(sheet[:top, j * cw : (j + 1) * cw], np.asarray(box)), f"header seed={j}"
    assert len({sheet[top:, j * cw : (j + 1) * cw].tobytes() for j in range(3)}) == 3
    shot(page, "4-sweep-seed")


def test_bad_id_shows_a_toast_and_keeps_the_cards(page):
    page.locator("#lora-repo-id textarea, #lora-repo-id input").first.fill("not a/valid id")
    click(page, "Load adapter")
    page.get_by_text("is not a valid Hub id").first.wait_for()
    shot(page, "5-error")
    assert resident_names(page) == ["lora_a", "second"]


def test_delete_per_card_keeps_the_other_weights(page):
    """Each card deletes its own adapter; the others keep the weight and the mix the page showed."""
    set_weight(page, "second", -0.5)
    card(page, "second").get_by_role("checkbox", name="second").check()
    page.get_by_text("Use via API").first.click()
    snippet = page.locator("#api-snippet")
    snippet.get_by_text("adapters={'lora_a': 0.3, 'second': -0.5}").wait_for()
    card(page, "second").get_by_role("button", name="Delete").click()
    card(page, "second").wait_for(state="detached")
    assert resident_names(page) == ["lora_a"]
    assert card(page, "lora_a").locator('input[type="number"]').input_value() == "0.3"
    snippet.get_by_text("adapters={'lora_a': 0.3}").wait_for()
    shot(page, "5-delete")
    page.get_by_text("Use via API").first.click()


def test_load_by_hub_id_shows_a_download_bar(page, tmp_path, monkeypatch):
    """A LoRA by Hub id through a real Hub server (olah): the page shows the bytes arriving, then the card."""
    from huggingface_hub import constants

    from peft_core import hub
    from tests.hubserver import running_hub

    # The test file is 20 kB: small chunks, each held back a little, make the bar last long enough to be seen.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    report = hub._ByteCounter.report
    monkeypatch.setattr(hub._ByteCounter, "report", lambda self, **kw: (time.sleep(0.15), report(self, **kw)))
    with running_hub(tmp_path) as server:
        server.add_repo("test-org/lora-b", page.assets["lora_b"])
        page.locator("#lora-repo-id textarea, #lora-repo-id input").first.fill("test-org/lora-b")
        page.locator("#lora-adapter-name textarea, #lora-adapter-name input").first.fill("hubbed")
        click(page, "Load adapter")
        status = page.locator("#adapter-load-status")
        status.get_by_text("downloading test-org/lora-b/pytorch_lora_weights.safetensors: ").first.wait_for()
        assert status.get_by_text(re.compile(r"\d / 0\.019 MB")).count() >= 1
        shot(page, "5-download")
        card(page, "hubbed").wait_for()
    assert "test-org/lora-b" in card(page, "hubbed").inner_text()
    # A page opened now is another session (docs/SESSIONS.md): it shows the shared adapters, not this one's.
    later = page.context.new_page()
    later.set_default_timeout(TIMEOUT)
    later.goto(page.url.split("?")[0])
    card(later, "lora_a").wait_for()
    assert resident_names(later) == ["lora_a"]
    later.close()
    card(page, "hubbed").get_by_role("button", name="Delete").click()
    card(page, "hubbed").wait_for(state="detached")


def test_text_tab_train_and_use(page):
    page.get_by_role("tab", name="Text (Transformers)").click()
    click(page, "Generate text")
    out = page.locator("#text-output textarea")
    page.wait_for_function("el => el.value.length > 0", arg=out.element_handle())
    before = out.input_value()
    page.get_by_text("Add a LoRA and train it").click()
    click(page, "Add LoRA")
    page.locator("#text-card-mine").last.wait_for()
    page.get_by_placeholder("Paste text in the style to learn").fill("the captain sails the sea . " * 6)
    click(page, "Train")
    page.get_by_text("trained mine for").first.wait_for()  # the card says "not trained yet" until then
    assert page.get_by_text("Training loss").count() >= 1
    # Use it: only "mine" active, the learned text comes out.
    page.get_by_role("checkbox", name="lora_a").uncheck()
    page.get_by_role("checkbox", name="mine").check()
    page.locator("#text-prompt textarea").fill("the captain")
    click(page, "Generate text")
    page.wait_for_function("([el, old]) => el.value !== old", arg=[out.element_handle(), before])
    assert "sails the sea" in out.input_value()
    shot(page, "6-train")


def open_section(page, title: str, inside: str):
    """Open the accordion `title` unless `inside` (a button's name in it) already shows."""
    if not page.get_by_role("button", name=inside, exact=True).is_visible():
        page.get_by_text(title).first.click()
    page.get_by_role("button", name=inside, exact=True).wait_for()


def test_text_ticks_survive_add_and_merge(page):
    """Adding and merging adapters keeps the cards' ticks as the user left them (they were reset to the first
    adapter); a merge says what it made; a merge line without its colon says the expected form."""
    page.get_by_role("tab", name="Text (Transformers)").click()
    open_section(page, "Add a LoRA and train it", "Add LoRA")
    new_name = page.get_by_label("adapter_name", exact=True)
    for name in ("tick1", "tick2"):
        new_name.fill(name)
        click(page, "Add LoRA")
        page.locator(f"#text-card-{name}").last.wait_for()
    ticks = page.locator("#text-cards")
    for box in ticks.get_by_role("checkbox").all():
        box.uncheck()
    ticks.get_by_role("checkbox", name="tick1", exact=True).check()

    def ticked():
        return [b.evaluate("b => b.closest('label').innerText.trim()") for b in ticks.get_by_role("checkbox").all()
                if b.is_checked()]  # fmt: skip

    new_name.fill("tick3")
    click(page, "Add LoRA")
    page.locator("#text-card-tick3").last.wait_for()
    page.wait_for_timeout(300)  # the cards are redrawn with their ticks
    assert ticked() == ["tick1"]
    open_section(page, "Merge adapters with weights", "Merge")
    weights = page.get_by_placeholder("pirate: 0.7, formal: 0.3")
    weights.fill("tick1 0.7")
    click(page, "Merge")
    page.get_by_text("is not `name: weight`").first.wait_for()
    weights.fill("tick1: 0.5, tick2: 0.5")
    page.get_by_label("new adapter_name").fill("tick12")
    click(page, "Merge")
    page.locator("#merge-status").get_by_text("tick12").first.wait_for()
    assert "0.5 × tick1 + 0.5 × tick2" in page.locator("#merge-status").inner_text()
    page.wait_for_timeout(300)
    assert ticked() == ["tick1"]
    shot(page, "8-ticks-merge")


def test_no_console_errors(page):
    assert not [e for e in page.console_errors if "favicon" not in e and "Failed to load resource" not in e]


@pytest.mark.parametrize("theme, width", [("dark", 1280), ("light", 390), ("dark", 390)])
def test_themes_and_phone_width(page, theme, width):
    """Dark and light themes, and a phone-width window: the page renders, nothing overflows sideways, and an
    image can still be made."""
    other = page.context.new_page()
    other.set_viewport_size({"width": width, "height": 900})
    other.set_default_timeout(TIMEOUT)
    other.goto(page.url.split("?")[0] + f"?__theme={theme}")
    other.get_by_role("button", name="Generate", exact=True).click()
    other.locator("#image img").first.wait_for()
    is_dark = other.evaluate("document.body.classList.contains('dark') || "
                             "document.documentElement.classList.contains('dark')")  # fmt: skip
    assert is_dark == (theme == "dark")
    overflow = other.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow}px wider than a {width}px window"
    other.screenshot(path=ARTIFACTS / f"browser-{theme}-{width}.png", full_page=True)
    other.close()


def test_preset_loads_a_bundled_demo(page):
    page.get_by_role("tab", name="Images (Diffusers)").click()
    gallery = page.locator("#image-presets")
    gallery.get_by_text("Shapes: pastel", exact=False).first.wait_for()
    gallery.locator("button").filter(has_text="Shapes: pastel").first.click()
    page.get_by_text("adapter-studio/tiny-shapes @").first.wait_for()
    card(page, "pastel").wait_for()  # the cards are redrawn just after the event that loaded them
    assert "lora_a" not in resident_names(page)  # a new base clears the adapters made for the old one
    assert card(page, "pastel").get_by_role("checkbox", name="pastel").is_checked()
    click(page, "Generate")
    image_bytes(page, "image")
    shot(page, "7-preset")


def test_closing_the_tab_stops_its_generation(page, monkeypatch):
    """A visitor who asks for a long image and closes the tab: gradio marks the job dead, and the studio stops at
    the next denoising step instead of finishing an image nobody will see (peft_core/turns.py)."""
    from peft_core.turns import Cancelled
    from tests.test_turns import record_checks

    seen = record_checks(monkeypatch)
    monkeypatch.setenv("STUDIO_MAX_IMAGE_COST", "100")  # 100 steps of the tiny pipeline: 4 default images
    context = page.context.browser.new_context(viewport={"width": 1280, "height": 1000})
    visitor = context.new_page()
    visitor.set_default_timeout(TIMEOUT)
    visitor.goto(page.url)
    visitor.get_by_role("button", name="Generate", exact=True).wait_for()
    visitor.locator("#settings").get_by_text("Settings:").first.click()  # steps sit in the Settings section
    steps = visitor.get_by_label("number input for Steps")
    for _ in range(20):  # a fill that lands while the page still renders may be put back, as in test_sweep_grid
        steps.fill("100")
        steps.press("Enter")
        visitor.wait_for_timeout(250)
        if steps.input_value() == "100" and visitor.get_by_label("range slider for Steps").input_value() == "100":
            break
    assert steps.input_value() == "100"
    click(visitor, "Generate")
    for _ in range(int(TIMEOUT / 50)):
        if "step" in seen:
            break
        time.sleep(0.05)
    context.close()  # the tab goes: its event stream closes
    for _ in range(int(TIMEOUT / 50)):
        if any(isinstance(s, Cancelled) for s in seen):
            break
        time.sleep(0.05)
    assert isinstance(seen[-1], Cancelled) and 0 < seen.count("step") < 100
