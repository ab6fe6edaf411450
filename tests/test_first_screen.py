"""The Images tab's first screen in a real browser (issue #19): at a desktop and a phone size, light and dark, the
prompt, Generate and the top of the result are inside the first viewport; Enter generates; a preset click shows
its image without the user scrolling to it. Screenshots land in test-artifacts/first-screen-*.png.
"""

from pathlib import Path

import pytest

from tests.conftest import launch_app
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT, image_bytes

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
DESKTOP, PHONE = {"width": 1440, "height": 900}, {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser_app(assets, lm_assets):
    """(browser, url): the app with one resident adapter, and Debian's Chromium."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with launch_app(assets, ("lora_a",), lm_assets, ("lora_a",)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser, url
        browser.close()


def open_page(browser_app, viewport: dict, theme: str = "light"):
    browser, url = browser_app
    page = browser.new_context(viewport=viewport).new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(url + f"?__theme={theme}")
    page.get_by_role("button", name="Generate", exact=True).wait_for()
    page.locator("#pipeline-info").get_by_text(" @ ").first.wait_for()  # the page's first load has answered
    return page


def in_viewport(page, selector: str, whole: bool = True) -> dict:
    """The bounding box of `selector`, asserted inside the window (only its top edge when not `whole`)."""
    box = page.locator(selector).first.bounding_box()
    size = page.viewport_size
    assert box is not None, f"{selector} is not shown"
    bottom = box["y"] + box["height"] if whole else box["y"] + 40  # the top of a result: its label and first rows
    assert 0 <= box["y"] and bottom <= size["height"], f"{selector} at {box} is outside the {size} window"
    assert 0 <= box["x"] and box["x"] + box["width"] <= size["width"] + 1, f"{selector} at {box} overflows sideways"
    return box


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_prompt_generate_and_result_on_the_first_screen(browser_app, viewport, theme):
    page = open_page(browser_app, viewport, theme)
    prompt = in_viewport(page, "#prompt")
    generate = in_viewport(page, "#generate")
    result = in_viewport(page, "#image", whole=False)
    if viewport is DESKTOP:  # two columns: the result beside the prompt, not under it
        assert result["x"] > prompt["x"] + prompt["width"] - 1 and result["y"] < generate["y"] + generate["height"]
    else:  # one column: prompt, Generate, then the result
        assert prompt["y"] < generate["y"] < result["y"]
    # Enter in the prompt generates, as the button does.
    page.locator("#prompt input, #prompt textarea").first.press("Enter")
    image_bytes(page, "image")
    in_viewport(page, "#image img", whole=False)
    page.screenshot(path=ARTIFACTS / f"first-screen-{theme}-{viewport['width']}.png")
    page.context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_preset_click_shows_its_image(browser_app, viewport):
    """One click loads the preset's base and adapter and generates; the image is in view without scrolling (on a
    phone the page brings it into view, since the result sits above the presets)."""
    page = open_page(browser_app, viewport)
    preset = page.locator("#image-presets button").filter(has_text="Shapes: night").first
    preset.scroll_into_view_if_needed()
    if viewport is DESKTOP:
        in_viewport(page, "#image-presets button >> nth=0")  # reachable on the first screen
    preset.click()
    page.locator("#prompt-sent").get_by_text("a red circle").wait_for()  # the preset's prompt, sent
    image_bytes(page, "image")
    page.wait_for_timeout(500)  # a scroll to the output is animated
    in_viewport(page, "#image img", whole=False)
    assert page.locator("#adapter-card-night").get_by_role("checkbox", name="night").is_checked()
    page.screenshot(path=ARTIFACTS / f"first-screen-preset-{viewport['width']}.png")
    page.context.close()


def test_a_dropped_png_restores_its_recipe_and_image(browser_app, tmp_path):
    """A PNG saved from the page, dropped back on it after the prompt and seed changed: the recipe comes back
    (prompt, seed, mix) and the same image is made again, bit for bit."""
    import io

    import numpy as np
    from PIL import Image

    page = open_page(browser_app, DESKTOP)
    prompt = page.locator("#prompt input, #prompt textarea").first
    prompt.fill("a blue square")
    prompt.press("Enter")
    png = image_bytes(page, "image")
    assert "adapter-studio-recipe" in Image.open(io.BytesIO(png)).text  # the page's PNG carries it
    (tmp_path / "made.png").write_bytes(png)
    prompt.fill("something else")
    prompt.press("Enter")
    other = image_bytes(page, "image", png)
    page.locator("#restore-png input[type=file]").set_input_files(str(tmp_path / "made.png"))
    page.locator("#restore-note").get_by_text("Restored the recipe, all of it.").wait_for()
    again = image_bytes(page, "image", other)
    assert prompt.input_value().startswith("a blue square")

    def pixels(data):
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    assert np.array_equal(pixels(again), pixels(png)) and not np.array_equal(pixels(other), pixels(png))
    page.screenshot(path=ARTIFACTS / "first-screen-restored.png", full_page=True)
    page.context.close()


def test_no_empty_studio_flash_while_the_defaults_load():
    """python app.py serves the page before the default pipeline is in: until the page's first load answers, the
    pipeline line says it is loading (not "No pipeline loaded"); the answer then tells the truth."""
    import app
    from peft_core.image.studio import ImageStudio

    images = ImageStudio(device="cpu")
    demo = app.build_demo(images)
    info = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "pipeline-info")
    assert info.value == "Loading the pipeline…"
    page_load = next(f.fn for f in demo.fns.values() if f.fn and f.fn.__name__ == "ui_page_load")
    assert "No pipeline loaded." in page_load().values()


def test_size_sliders_fit_the_loaded_pipeline():
    """Width and height go to four times the pipeline's default size (not to 1024 for a 32-px model), within the
    limits, and never below a value that must be shown (a recipe's, a preset's)."""
    from dataclasses import replace

    from ui.image_handlers import FALLBACK, size_range

    def sized(width, height):  # a pipeline of no known family with these defaults
        return replace(FALLBACK, default_width=width, default_height=height)

    assert size_range(sized(32, 32), 32) == 128
    assert size_range(sized(1024, 1024), 1024) == 1024
    assert size_range(sized(32, 48), 512) == 512


def test_the_pipeline_line_waits_for_the_pages_own_load(studio, allow_assets):
    """A page of an app built with a pipeline in still says "Loading…" until its own load answers: the line naming
    the pipeline is the sign that the cards and mix beside it are the server's current ones (another page may have
    switched the base since the app was built), and the tests wait on it (open_page)."""
    import app

    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="lora_a")
    demo = app.build_demo(studio)
    info = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "pipeline-info")
    assert info.value == "Loading the pipeline…"
    page_load = next(f.fn for f in demo.fns.values() if f.fn and f.fn.__name__ == "ui_page_load")
    assert any(" @ " in str(v) for v in page_load().values())
