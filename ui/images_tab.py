"""The Images tab: a pipeline, its resident LoRAs as cards that are the mix, generate, compare, sweep, export."""

import itertools
import json
import tempfile

import gradio as gr

from peft_core import bundled, limits, presets, turns
from peft_core.image.prompts import with_trigger_words
from peft_core.image.studio import ImageRequest, ImageStudio
from peft_core.image.sweep import parse_values, sweep
from peft_core.limits import WEIGHT_MAX, WEIGHT_MIN
from ui.common import gpu, hub_progress, page_url, still_wanted, user_errors
from ui.snippets import image_snippet

WEIGHT_STEP = 0.05


# --- the resident adapters as cards: the page's editable view of the mix -------------------------------------------
# The mix lives in the browser as {adapter_name: [active, weight]} in a hidden JSON component: each card's checkbox
# and slider write their own entry there at once (a JavaScript-only event, no round trip and no race between two
# quick moves), and generate, compare, sweep, the snippet and export read it. The server-side State only says
# which cards to draw, with the values to start them at.


def card_rows(adapters: list[dict], previous: dict | None = None) -> dict[str, list]:
    """{adapter_name: [active, weight]} for every resident adapter, keeping what the page showed for known names.
    New ones start inactive at weight 1, but the first adapter of an empty page starts active so that the first
    image already shows an effect."""
    previous = previous or {}
    return {a["adapter_name"]: list(previous.get(a["adapter_name"], [not previous and i == 0, 1.0]))
            for i, a in enumerate(adapters)}  # fmt: skip


def mix_of(rows: dict | None) -> dict[str, float]:
    """The request's mix: every active adapter at its weight (the core checks names and values)."""
    return {str(name): float(weight) for name, (active, weight) in (rows or {}).items() if active}


def facts_markdown(a: dict) -> str:
    """One line of an adapter's facts: where it came from, its rank, the parts it touches, size, trigger words."""
    triggers = ", ".join(a["trigger_words"])
    return (f"`{a['repo_id']}` @ `{a['revision']}` · `{a['weight_name']}` · rank {a['rank']} · "
            f"{', '.join(a['components'])} · {a['size_mb']} MB" + (f" · trigger words: *{triggers}*" if triggers
                                                                    else ""))  # fmt: skip


def _set_row_js(name: str) -> str:
    """The browser-side update of one card's entry in the mix, from its checkbox and slider."""
    return f"(rows, active, weight) => ({{...(rows || {{}}), {json.dumps(name)}: [active, weight]}})"


def pipeline_markdown(info: dict | None) -> str:
    if not info:
        return "No pipeline loaded."
    return (
        f"**{info['model_id']}** @ `{info['revision']}` — {info['pipeline_class']} on {info['device']} "
        f"({info['dtype']}); defaults: {info['default_steps']} steps, guidance {info['default_guidance_scale']}, "
        f"{info['default_width']}×{info['default_height']}"
    )


def build_images_tab(images: ImageStudio):
    """The Images tab. Returns (fn, outputs) for the app to run when a page loads (see ui_page_load)."""
    """The Images tab's components and events, inside the caller's Blocks."""
    versions = itertools.count(1)  # every new card set differs from the last, so the cards are always redrawn

    def cards(adapters, rows) -> dict:
        return {"adapters": adapters, "rows": rows, "version": next(versions)}

    def refreshed(adapters, previous=None, rows=None):
        """The cards, the mix and the sweep's adapter pickers, after the resident set changed."""
        rows = card_rows(adapters, previous) if rows is None else rows
        names = [a["adapter_name"] for a in adapters]
        x = gr.update(choices=names, value=names[0] if names else None)
        return cards(adapters, rows), rows, x, gr.update(choices=[""] + names, value="")

    @user_errors
    def ui_load_pipeline(model_id, revision, progress=gr.Progress()):
        with hub_progress(progress, f"loading {model_id}"):
            info = images.load_pipeline(model_id, revision or "main")
        return pipeline_markdown(info), *refreshed([])

    @user_errors
    def ui_load_adapter(repo_id, weight_name, adapter_name, revision, rows, progress=gr.Progress()):
        with hub_progress(progress, f"loading {repo_id}"):
            adapters = images.load_adapter(repo_id, weight_name, adapter_name, revision or "main")
        new = adapters[-1]
        note = f"Loaded **{new['adapter_name']}** from `{new['repo_id']}` ({new['size_mb']} MB)."
        return note, *refreshed(adapters, rows)

    def deleter(name):
        @user_errors
        def ui_delete_adapter(rows):
            return refreshed(images.delete_adapter(name), rows)

        return ui_delete_adapter

    def request(rows, disabled, triggers, prompt, negative, seed, steps, guidance, width, height):
        mix = mix_of(rows)
        if triggers:  # also when disabled: the toggle then shows what the LoRA alone does to the same prompt
            prompt = with_trigger_words(prompt, images.list_adapters(), mix)
        return ImageRequest(prompt, mix, not disabled, int(seed), int(steps), float(guidance), int(width),
                            int(height), negative)  # fmt: skip

    def denoising(progress):
        return lambda step, total: progress((step, total), desc="denoising")

    # The page's long events stop between steps once their tab is closed (ui/common.py, still_wanted).
    @user_errors
    @gpu
    def ui_generate(rows, disabled, triggers, prompt, negative, seed, steps, guidance, width, height,
                    progress=gr.Progress(), http: gr.Request = None):  # fmt: skip
        r = request(rows, disabled, triggers, prompt, negative, seed, steps, guidance, width, height)
        with turns.watch(still_wanted(http, "ui_generate")):
            return images.generate(r, denoising(progress)), prompt_note(r)

    @user_errors
    @gpu
    def ui_compare(rows, disabled, triggers, prompt, negative, seed, steps, guidance, width, height,
                   progress=gr.Progress(), http: gr.Request = None):  # fmt: skip
        r = request(rows, False, triggers, prompt, negative, seed, steps, guidance, width, height)
        with turns.watch(still_wanted(http, "ui_compare")):
            return (*images.compare(r, denoising(progress)), prompt_note(r))

    @user_errors
    @gpu
    def ui_sweep(rows, disabled, triggers, x_name, x_text, y_name, y_text, prompt, negative, seed, steps, guidance,
                 width, height, progress=gr.Progress(), http: gr.Request = None):  # fmt: skip
        if not x_name:
            raise gr.Error("choose the adapter to sweep on X")
        r = request(rows, False, triggers, prompt, negative, seed, steps, guidance, width, height)
        x_values = parse_values("X", x_text)
        y_values = parse_values("Y", y_text) if y_name else None
        with turns.watch(still_wanted(http, "ui_sweep")):
            cells = sweep(images, r, x_name, x_values, y_name or "", y_values,
                          progress=lambda i, n: progress((i, n), desc="sweep"))  # fmt: skip
        return gr.update(value=cells, columns=len(x_values)), prompt_note(r)

    def ui_snippet(rows, disabled, triggers, prompt, negative, seed, steps, guidance, width, height,
                   http: gr.Request):  # fmt: skip
        mix = mix_of(rows)
        if triggers:
            prompt = with_trigger_words(prompt, images.list_adapters(), mix)
        return image_snippet(page_url(http), prompt, negative, mix, not disabled, int(seed), int(steps),
                             float(guidance), int(width), int(height))  # fmt: skip

    @user_errors
    def ui_export(rows):
        return str(images.export_mix(mix_of(rows), tempfile.mkdtemp(prefix="adapter-studio-mix-")))

    image_presets = [p for p in presets.presets("images") if p.thumbnail.exists()]

    @user_errors
    def ui_preset(rows, progress=gr.Progress(), evt: gr.SelectData = None):
        preset = image_presets[evt.index]
        with hub_progress(progress, f"loading {preset.name}"):
            mix = presets.apply(preset, images)
        info = images.info.to_dict()
        adapters = images.list_adapters()
        kept = card_rows(adapters, rows)
        rows = {name: [name in mix, mix.get(name, weight)] for name, (_, weight) in kept.items()}
        settings = [preset.extra.get(k, info[f"default_{k}"]) for k in ("steps", "guidance_scale", "width", "height")]
        return (pipeline_markdown(info), preset.base, preset.prompt, *refreshed(adapters, rows=rows), *settings)

    def prompt_note(r: ImageRequest) -> str:
        return f"Prompt sent: `{r.prompt}`"

    info = images.info.to_dict() if images.info else None
    adapters = images.list_adapters() if info else []
    defaults = info or {"default_steps": 20, "default_guidance_scale": 5.0, "default_width": 32, "default_height": 32}

    gallery = gr.Gallery(
        value=[(str(p.thumbnail), f"{p.name}: {p.note}") for p in image_presets],
        label="Presets (the bundled demos work offline; the others need the Hub)",
        columns=7, height=200, allow_preview=False, interactive=False, elem_id="image-presets",
        elem_classes="pixelated",
    )  # fmt: skip
    with gr.Row():
        model_id = gr.Textbox(label="Base pipeline (Hub id)", value=info["model_id"] if info else
                              bundled.DEFAULT_PIPELINE, scale=3)  # fmt: skip
        model_revision = gr.Textbox(label="Revision", value="main", scale=1)
        load_pipeline_btn = gr.Button("Load pipeline", scale=1)
    pipeline_md = gr.Markdown(pipeline_markdown(info), elem_id="pipeline-info")
    with gr.Row():
        repo_id = gr.Textbox(label="LoRA repo id", placeholder="org/name", scale=3, elem_id="lora-repo-id")
        weight_name = gr.Textbox(label="weight_name (optional)", placeholder="file.safetensors", scale=2)
        adapter_name = gr.Textbox(label="adapter_name (optional)", scale=2, elem_id="lora-adapter-name")
        adapter_revision = gr.Textbox(label="Revision", value="main", scale=1)
        load_adapter_btn = gr.Button("Load adapter", scale=1)
    load_note = gr.Markdown(elem_id="adapter-load-status", min_height=32)
    # Read when each page loads, not when the app is built: the resident set is shared and may have changed since.
    resident = gr.State(lambda: cards(images.list_adapters(), card_rows(images.list_adapters())))
    mix_rows = gr.JSON(lambda: card_rows(images.list_adapters()), visible="hidden", elem_id="mix-rows")
    private = {"api_visibility": "private"}  # the page's own events; the named API is ui/api.py

    with gr.Column(elem_id="adapter-cards"):
        gr.Markdown(f"**Resident adapters**: tick to use one, set its weight ({WEIGHT_MIN:g}…{WEIGHT_MAX:g}; negative "
                    "subtracts the style)")  # fmt: skip

        # Drawn when a page loads and after each change of the resident set, so x_name and y_name (made below)
        # exist by then.
        @gr.render(inputs=[resident], show_progress="hidden")
        def adapter_cards(shown):
            if not shown["adapters"]:
                gr.Markdown("No adapter loaded yet: load one by Hub id above, or pick a preset.")
            for a in shown["adapters"]:
                name = a["adapter_name"]
                active, weight = shown["rows"].get(name, [False, 1.0])
                with gr.Group(elem_classes="adapter-card", elem_id=f"adapter-card-{name}"):
                    with gr.Row():
                        on = gr.Checkbox(value=active, label=name, interactive=True, scale=1, min_width=120,
                                         elem_classes="active")  # fmt: skip
                        w = gr.Slider(WEIGHT_MIN, WEIGHT_MAX, value=weight, step=WEIGHT_STEP, label="weight",
                                      interactive=True, scale=3, min_width=180, elem_classes="weight")  # fmt: skip
                        delete = gr.Button("Delete", variant="stop", size="sm", scale=0, min_width=80)
                    gr.Markdown(facts_markdown(a), elem_classes="facts")
                for control in (on, w):
                    control.change(None, [mix_rows, on, w], mix_rows, js=_set_row_js(name), **private)
                delete.click(deleter(name), [mix_rows], [resident, mix_rows, x_name, y_name], **private)

    export_btn = gr.Button("Export mix as one LoRA")
    export_file = gr.File(label="The active mix as one LoRA safetensors (exact: the parts concatenated)", height=90)
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", value="a red circle", scale=3, elem_id="prompt")
        negative = gr.Textbox(label="Negative prompt", scale=2)
    with gr.Row():
        seed = gr.Number(label="Seed", value=0, precision=0, minimum=limits.SEED_MIN, maximum=limits.SEED_MAX)
        steps = gr.Slider(limits.STEPS_MIN, limits.STEPS_MAX, value=defaults["default_steps"], step=1, label="Steps")
        guidance = gr.Slider(limits.GUIDANCE_MIN, limits.GUIDANCE_MAX, value=defaults["default_guidance_scale"],
                             step=0.5, label="Guidance")  # fmt: skip
        size = {"minimum": limits.SIZE_MIN, "maximum": limits.SIZE_MAX, "step": limits.SIZE_MULTIPLE}
        width = gr.Slider(value=defaults["default_width"], label="Width", **size)
        height = gr.Slider(value=defaults["default_height"], label="Height", **size)
    with gr.Row():
        disabled = gr.Checkbox(label="Disable LoRA (base output)", value=False, elem_id="disable-lora")
        triggers = gr.Checkbox(label="Append trigger words", value=True, elem_id="trigger-words")
        generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
        compare_btn = gr.Button("Compare base vs adapted", elem_id="compare")
    sent = gr.Markdown(elem_id="prompt-sent")
    with gr.Row():
        image_args = {"format": "png", "type": "pil", "height": 320, "elem_classes": "pixelated"}
        image = gr.Image(label="Image", elem_id="image", **image_args)
        base_image = gr.Image(label="Base (same seed)", elem_id="base", **image_args)
        adapted_image = gr.Image(label="Adapted (same seed)", elem_id="adapted", **image_args)
    names = [a["adapter_name"] for a in adapters]
    with gr.Accordion("Weight sweep (X/Y grid)", open=False):
        with gr.Row():
            x_name = gr.Dropdown(label="X adapter", choices=names, value=names[0] if names else None,
                                 elem_id="sweep-x")  # fmt: skip
            x_text = gr.Textbox(label="X weights", value="-1:1.5:6", elem_id="sweep-x-values")
            y_name = gr.Dropdown(label="Y adapter (optional)", choices=[""] + names, value="")
            y_text = gr.Textbox(label="Y weights", value="0, 0.5, 1")
            sweep_btn = gr.Button("Run sweep", elem_id="sweep")
        grid = gr.Gallery(label="Sweep", columns=6, height="auto", elem_id="sweep-grid", elem_classes="pixelated",
                          format="png")  # fmt: skip
    with gr.Accordion("Use via API", open=False):
        snippet = gr.Code(language="python", label="gradio_client: reproduces what is on screen",
                          elem_id="api-snippet")  # fmt: skip

    @user_errors
    def ui_page_load():
        """What the page shows of the studio, read when the page loads: python app.py serves the page while the
        default pipeline is still loading (peft_core/startup.py), and other users may have changed it since."""
        images.startup.wait()
        info = images.info.to_dict() if images.info else None
        names = [a["adapter_name"] for a in images.list_adapters()] if info else []
        shown = info or defaults
        return (info["model_id"] if info else bundled.DEFAULT_PIPELINE, pipeline_markdown(info),
                *[shown[f"default_{k}"] for k in ("steps", "guidance_scale", "width", "height")],
                gr.update(choices=names, value=names[0] if names else None), gr.update(choices=[""] + names, value=""))

    settings = [prompt, negative, seed, steps, guidance, width, height]
    lists = [resident, mix_rows, x_name, y_name]
    load_pipeline_btn.click(ui_load_pipeline, [model_id, model_revision], [pipeline_md, *lists], **private)
    load_adapter_btn.click(ui_load_adapter, [repo_id, weight_name, adapter_name, adapter_revision, mix_rows],
                           [load_note, *lists], show_progress_on=load_note, **private)  # fmt: skip
    export_btn.click(ui_export, [mix_rows], export_file, **private)
    gallery.select(ui_preset, [mix_rows], [pipeline_md, model_id, prompt, *lists, steps, guidance, width, height],
                   show_progress_on=pipeline_md, **private)  # fmt: skip
    common = [mix_rows, disabled, triggers]
    generate_btn.click(ui_generate, [*common, *settings], [image, sent], **private)
    compare_btn.click(ui_compare, [*common, *settings], [base_image, adapted_image, sent], **private)
    sweep_btn.click(ui_sweep, [*common, x_name, x_text, y_name, y_text, *settings], [grid, sent], **private)
    gr.on([c.change for c in [*common, *settings]], ui_snippet, [*common, *settings], snippet, **private)
    return ui_page_load, [model_id, pipeline_md, steps, guidance, width, height, x_name, y_name]
