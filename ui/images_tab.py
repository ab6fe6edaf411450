"""The Images tab: a pipeline, its resident LoRAs as cards that are the mix, generate, compare, sweep, export.

The page is built by small functions, one per part of the screen, that put their components on an `ImagesPage`;
`wire` then connects the events to the handlers (ui/image_handlers.py) by name: a handler's inputs are named
parameters or one {component: value} dict, and it answers with a {component: value} dict.
"""

from types import SimpleNamespace

import gradio as gr

from peft_core import limits, settings
from peft_core.image.requests import PipelineInfo
from peft_core.image.studio import ImageStudio
from peft_core.limits import WEIGHT_MAX, WEIGHT_MIN
from ui.common import PRIVATE
from ui.image_cards import cards, draw_cards, kept_ticks
from ui.image_handlers import FALLBACK, LOADING, ImageHandlers, size_range, x_choices, y_choices

# Bring the result into view when it is out of it (on a phone it sits above the presets); a desktop stays still.
SHOW_RESULT_JS = """() => {
  const el = document.querySelector('#image');
  const top = el ? el.getBoundingClientRect().top : 0;
  if (el && (top < 0 || top > window.innerHeight - 120)) el.scrollIntoView({block: 'start'});
}"""


class ImagesPage(SimpleNamespace):
    """The Images tab's components by name (prompt, generate_btn, image, ...), set by the builders below."""


def build_images_tab(images: ImageStudio):
    """The Images tab's components and events, inside the caller's Blocks. Returns (fn, outputs) for the app to
    run when a page loads (see ImageHandlers.ui_page_load).

    The first screen is the outcome: the prompt, Generate and the mix on the left, the result on the right (on a
    phone: prompt, Generate, result, then the mix; the CSS in ui/common.py places the three parts). Loading from
    the Hub, settings, the sweep, export and the API snippet are sections below.
    """
    p = ImagesPage()
    on = ImageHandlers(images, p)
    info = images.info
    defaults = info or FALLBACK
    names = [a["adapter_name"] for a in images.list_adapters()] if info else []
    with gr.Row(elem_id="first-screen"):
        with gr.Column(elem_id="ask"):
            _ask(p)
        with gr.Column(elem_id="result"):
            _outputs(p)
        with gr.Column(elem_id="mix"):
            # "Loading…" until this page's own load answers (ImageHandlers.ui_page_load), even when the app was built
            # with a pipeline in: the base and adapters may have changed since, and the line naming the pipeline is
            # the sign that the cards and the mix beside it are the server's current ones.
            p.pipeline_md = gr.Markdown(LOADING, elem_id="pipeline-info")
            _presets(p, on)
            _adapter_cards(p, images, on)
    with gr.Accordion("Settings: negative prompt, seed, steps, guidance, size", open=False, elem_id="settings"):
        _settings(p, defaults)
    _sweep(p, names)
    with gr.Accordion("Load from the Hub: a base pipeline, a LoRA", open=True, elem_id="hub-forms"):
        _pipeline_form(p, info)
        _adapter_form(p)
    with gr.Accordion("Export the active mix as one LoRA", open=False):
        _export(p)
    with gr.Accordion("Restore a picture: drop a PNG made here", open=True):
        _restore(p)
    _snippet(p)
    wire(p, on)
    return on.ui_page_load, [p.model_id, p.pipeline_md, p.gallery, p.steps, p.guidance, p.width, p.height, *_lists(p)]


def _presets(p: ImagesPage, on: ImageHandlers) -> None:
    p.gallery = gr.Gallery(
        value=on.gallery(), label="Presets (the bundled demos work offline; the others need the Hub: greyed without)",
        columns=5, height=150, allow_preview=False, interactive=False, elem_id="image-presets",
        elem_classes="pixelated",
    )  # fmt: skip


def _pipeline_form(p: ImagesPage, info: PipelineInfo | None) -> None:
    with gr.Row():
        p.model_id = gr.Textbox(label="Base pipeline (Hub id)", value=info.model_id if info else
                                settings.current().default_pipeline, scale=3)  # fmt: skip
        p.model_revision = gr.Textbox(label="Revision", value="main", scale=1)
        p.load_pipeline_btn = gr.Button("Load pipeline", scale=1)


def _adapter_form(p: ImagesPage) -> None:
    with gr.Row():
        p.repo_id = gr.Textbox(label="LoRA repo id", placeholder="org/name", scale=3, elem_id="lora-repo-id")
        p.weight_name = gr.Textbox(label="weight_name (optional)", placeholder="file.safetensors", scale=2)
        p.adapter_name = gr.Textbox(label="adapter_name (optional)", scale=2, elem_id="lora-adapter-name")
        p.adapter_revision = gr.Textbox(label="Revision", value="main", scale=1)
        p.load_adapter_btn = gr.Button("Load adapter", scale=1)
    p.load_note = gr.Markdown(elem_id="adapter-load-status", min_height=32)


def _adapter_cards(p: ImagesPage, images: ImageStudio, on: ImageHandlers) -> None:
    # Set again when each page loads (ImageHandlers.ui_page_load): the resident set is shared and may have changed
    # since the app was built. (Not callable values: gradio would serve each as an unnamed API and MCP tool.)
    adapters = images.list_adapters() if images.info else []
    p.resident = gr.State(cards(adapters, kept_ticks(adapters)))
    p.ticks = gr.JSON(kept_ticks(adapters), visible="hidden", elem_id="image-ticks")

    def on_delete(name, button):
        button.click(on.deleter(name), inputs_kwargs={"ticks": p.ticks}, outputs=[*_lists(p), p.undo, p.undo_btn],
                     **PRIVATE)  # fmt: skip

    with gr.Column(elem_id="adapter-cards"):
        gr.Markdown(f"**Resident adapters**: tick to use one, set its weight ({WEIGHT_MIN:g}…{WEIGHT_MAX:g}; negative "
                    "subtracts the style)")  # fmt: skip

        # Delete acts at once and can be undone: the last deleted adapter is loaded back, ticked and weighted as
        # it was (ImageHandlers.ui_undo_delete).
        p.undo = gr.State(None)
        p.undo_btn = gr.Button("Undo", visible=False, size="sm", elem_id="undo-delete")

        # Drawn when a page loads (its load event sets p.resident) and after each change of the resident set, so
        # p.x_name and p.y_name (made below) exist by then. Each card starts at the page's mix as it is when drawn:
        # a redraw for a picture (ui_thumbnails) must not undo a tick or a weight set while the picture was made.
        @gr.render(inputs=[p.resident, p.ticks], triggers=[p.resident.change], show_progress="hidden")
        def adapter_cards(shown, ticks):
            draw_cards({**shown, "ticks": {**shown["ticks"], **(ticks or {})}}, p.ticks, on_delete)

        # Each card's picture comes after the card: made (or read from the model card's widget) once the event that
        # changed the cards has answered, then the cards are redrawn with it (ImageHandlers.ui_thumbnails).
        p.resident.change(on.ui_thumbnails, inputs_kwargs={"shown": p.resident},
                          outputs=[p.resident], show_progress="hidden", **PRIVATE)  # fmt: skip


def _export(p: ImagesPage) -> None:
    p.export_btn = gr.Button("Export mix as one LoRA")
    p.export_file = gr.File(label="The active mix as one LoRA safetensors (exact: the parts concatenated)",
                            height=90)  # fmt: skip


def _ask(p: ImagesPage) -> None:
    """The prompt and what to do with it: Enter in the prompt generates as the button does."""
    p.prompt = gr.Textbox(label="Prompt (Enter generates)", value=settings.DEFAULT_PROMPT, lines=1, max_lines=1,
                          elem_id="prompt")  # fmt: skip
    with gr.Row():
        p.generate_btn = gr.Button("Generate", variant="primary", elem_id="generate", scale=2)
        p.compare_btn = gr.Button("Compare base vs adapted", elem_id="compare", scale=1)
    with gr.Row():
        p.disabled = gr.Checkbox(label="Disable LoRA (base output)", value=False, elem_id="disable-lora")
        p.triggers = gr.Checkbox(label="Append trigger words", value=True, elem_id="trigger-words")
    p.sent = gr.Markdown(elem_id="prompt-sent")


def _settings(p: ImagesPage, defaults: PipelineInfo) -> None:
    p.negative = gr.Textbox(label="Negative prompt")
    with gr.Row():
        p.seed = gr.Number(label="Seed", value=0, precision=0, minimum=limits.SEED_MIN, maximum=limits.SEED_MAX)
        p.steps = gr.Slider(limits.STEPS_MIN, limits.STEPS_MAX, value=defaults.default_steps, step=1,
                            label="Steps")  # fmt: skip
        p.guidance = gr.Slider(limits.GUIDANCE_MIN, limits.GUIDANCE_MAX, value=defaults.default_guidance_scale,
                               step=0.5, label="Guidance")  # fmt: skip
    with gr.Row():
        top = size_range(defaults, 0)
        size = {"minimum": limits.SIZE_MIN, "maximum": top, "step": limits.SIZE_MULTIPLE}
        p.width = gr.Slider(value=defaults.default_width, label="Width", **size)
        p.height = gr.Slider(value=defaults.default_height, label="Height", **size)


def _outputs(p: ImagesPage) -> None:
    """The result, and a comparison as a slider (base | adapted) and side by side; each labelled with its request
    once made, the other cleared (ImageHandlers.shown)."""
    image_args = {"format": "png", "type": "pil", "elem_classes": "pixelated"}
    p.image = gr.Image(label="Image", elem_id="image", height=360, **image_args)
    p.slider = gr.ImageSlider(label="Compare: base | adapted (drag)", elem_id="compare-slider", max_height=360,
                              visible=False, **image_args)  # fmt: skip
    with gr.Row():  # shown once there is a comparison (ImageHandlers.shown)
        image_args.update(height=200, visible=False)
        p.base_image = gr.Image(label="Base (same seed)", elem_id="base", **image_args)
        p.adapted_image = gr.Image(label="Adapted (same seed)", elem_id="adapted", **image_args)


def _restore(p: ImagesPage) -> None:
    p.restore_png = gr.File(label="A PNG made here carries its recipe: base, adapters, weights, prompt, seed, "
                            "steps, guidance, size", file_types=[".png"], type="filepath", height=90,
                            elem_id="restore-png")  # fmt: skip
    p.restore_note = gr.Markdown(elem_id="restore-note")


def _sweep(p: ImagesPage, names: list[str]) -> None:
    with gr.Accordion("X/Y sweep: adapter weights, seed, steps, guidance, prompt S/R", open=False):
        gr.Markdown(SWEEP_HELP)
        with gr.Row():
            p.x_name = gr.Dropdown(label="X axis", choices=x_choices(names), value=names[0] if names else None,
                                   elem_id="sweep-x")  # fmt: skip
            p.x_text = gr.Textbox(label="X values", value="-1:1.5:6", elem_id="sweep-x-values")
            p.y_name = gr.Dropdown(label="Y axis (optional)", choices=y_choices(names), value="", elem_id="sweep-y")
            p.y_text = gr.Textbox(label="Y values", value="0, 0.5, 1", elem_id="sweep-y-values")
        with gr.Row():
            p.sweep_others = gr.Checkbox(label="Keep the other active adapters on, at their weights", value=True,
                                         elem_id="sweep-others")  # fmt: skip
            p.sweep_btn = gr.Button("Run sweep", elem_id="sweep")
        p.grid = gr.Image(label="Sweep (one PNG: columns X, rows Y)", format="png", type="pil", elem_id="sweep-grid",
                          elem_classes="pixelated")  # fmt: skip


SWEEP_HELP = (
    "An axis is an adapter's weight, the seed, the steps, the guidance or a prompt search-and-replace (S/R). "
    "Numbers are a list, `-1, 0, 0.5, 1`, or a range `start:stop:count`: `-1:1.5:6` is six weights evenly from -1 "
    "to 1.5, `0:7:8` seeds 0 to 7. A prompt S/R lists the text to find in the prompt, then what replaces it: "
    "`cat, dog, fox` (quote a value holding a comma). Each cell is one image with the rest of the settings as "
    "they are; at most 12 values an axis, 36 cells."
)


def _snippet(p: ImagesPage) -> None:
    with gr.Accordion("Use via API", open=False):
        p.snippet = gr.Code(language="python", label="gradio_client: reproduces what is on screen",
                            elem_id="api-snippet")  # fmt: skip


def _lists(p: ImagesPage) -> list:
    """What changes with the resident set: the cards, the mix and the sweep's adapter pickers."""
    return [p.resident, p.ticks, p.x_name, p.y_name]


def _settings_of(p: ImagesPage) -> list:
    """The sliders that follow the loaded pipeline (ImageHandlers.settings)."""
    return [p.steps, p.guidance, p.width, p.height]


def _request_inputs(p: ImagesPage) -> set:
    """Everything a request is made of (ImageHandlers.request reads them by component)."""
    return {p.ticks, p.disabled, p.triggers, p.prompt, p.negative, p.seed, p.steps, p.guidance, p.width, p.height}


def wire(p: ImagesPage, on: ImageHandlers) -> None:
    """Every event of the tab, each input given by name."""
    p.load_pipeline_btn.click(on.ui_load_pipeline, outputs=[p.pipeline_md, *_lists(p), *_settings_of(p)], **PRIVATE,
                              inputs_kwargs={"model_id": p.model_id, "revision": p.model_revision})  # fmt: skip
    p.load_adapter_btn.click(
        on.ui_load_adapter, outputs=[p.load_note, *_lists(p)], show_progress_on=p.load_note, **PRIVATE,
        inputs_kwargs={"repo_id": p.repo_id, "weight_name": p.weight_name, "adapter_name": p.adapter_name,
                       "revision": p.adapter_revision, "ticks": p.ticks},
    )  # fmt: skip
    p.undo_btn.click(on.ui_undo_delete, inputs_kwargs={"undo": p.undo, "ticks": p.ticks},
                     outputs=[*_lists(p), p.undo, p.undo_btn], **PRIVATE)  # fmt: skip
    p.export_btn.click(on.ui_export, inputs_kwargs={"ticks": p.ticks}, outputs=p.export_file, **PRIVATE)
    request = _request_inputs(p)
    results = [p.image, p.slider, p.base_image, p.adapted_image, p.sent]
    generate = {"fn": on.ui_generate, "inputs": request, "outputs": results, **PRIVATE}
    gr.on([p.generate_btn.click, p.prompt.submit], **generate)
    # A preset loads what it needs, then shows its image (scrolled to on a phone, where the result is above).
    loaded = p.gallery.select(on.ui_preset, inputs_kwargs={"ticks": p.ticks}, show_progress_on=p.pipeline_md,
                              outputs=[p.pipeline_md, p.model_id, p.prompt, *_lists(p), p.steps, p.guidance, p.width,
                                       p.height], **PRIVATE)  # fmt: skip
    loaded.success(**generate)
    loaded.success(None, js=SHOW_RESULT_JS, **PRIVATE)
    p.compare_btn.click(on.ui_compare, request, results, **PRIVATE)
    # A dropped PNG: its recipe restored on the page, then its image made again (the same, bit for bit).
    restored = p.restore_png.upload(on.ui_restore, inputs_kwargs={"png": p.restore_png, "ticks": p.ticks},
                                    outputs=[p.pipeline_md, p.model_id, p.prompt, p.negative, p.seed, p.steps,
                                             p.guidance, p.width, p.height, p.disabled, p.triggers, p.restore_note,
                                             *_lists(p)], show_progress_on=p.restore_note, **PRIVATE)  # fmt: skip
    restored.success(**generate)
    restored.success(None, js=SHOW_RESULT_JS, **PRIVATE)
    sweep = request | {p.x_name, p.x_text, p.y_name, p.y_text, p.sweep_others}
    p.sweep_btn.click(on.ui_sweep, sweep, [p.grid, p.sent], **PRIVATE)
    gr.on([c.change for c in request], on.ui_snippet, request, p.snippet, **PRIVATE)
