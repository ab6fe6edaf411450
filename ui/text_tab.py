"""The Text tab: a causal LM, its PEFT adapters as cards, add / train / merge, generate, compare.

Built like the Images tab: small functions, one per part of the screen, put their components on a `TextPage`;
`wire` connects the events to the handlers (ui/text_handlers.py), every input given by parameter name, and a
request's as one set of components (as on the Images tab). The adapters are cards (ui/text_cards.py) whose ticks
are the request's active list; the presets are captioned button cards that load what they need and generate.
"""

from types import SimpleNamespace

import gradio as gr

from peft_core import limits, settings
from peft_core.text.merge import MERGE_TYPES
from peft_core.text.requests import ModelInfo
from peft_core.text.studio import TextStudio
from ui.api import TEXT_GENERATION
from ui.common import PRIVATE
from ui.preset_gallery import card_caption
from ui.text_cards import cards, draw_cards, kept_ticks
from ui.text_handlers import TRAIN_EXAMPLE, TextHandlers, model_markdown


class TextPage(SimpleNamespace):
    """The Text tab's components by name (prompt, ticks, resident, preset_btns, ...), set by the builders below."""


def build_text_tab(studio: TextStudio):
    """The Text tab's components and events, inside the caller's Blocks. Returns (fn, outputs) for the app to run
    when a page loads (see TextHandlers.ui_page_load)."""
    p = TextPage()
    on = TextHandlers(studio, p)
    info = studio.info
    adapters = studio.list_adapters() if info else []
    _presets(p, on)
    _model_form(p, info)
    _adapters(p, on, adapters)
    _add_and_train(p, adapters)
    _merge(p)
    _generate(p)
    wire(p, on)
    return on.ui_page_load, [p.model_id, p.model_md, *p.preset_btns, p.train_note, *_lists(p)]


def _presets(p: TextPage, on: TextHandlers) -> None:
    """One captioned card per preset (name, then its note), drawn by the page in the theme's colours; greyed and
    unclickable, saying why, where this machine cannot run it. Set again on each page load."""
    gr.Markdown("**Presets**: one click loads the model and adapters and generates (the bundled demos work "
                "offline; the others need the Hub)")  # fmt: skip
    with gr.Row(elem_id="text-presets"):
        p.preset_btns = []
        for preset in on.presets:
            caption, why = card_caption(preset, on.studio.device)
            p.preset_btns.append(gr.Button(caption, interactive=why is None, elem_classes="preset-card",
                                           elem_id=f"text-preset-{preset.slug}", min_width=150))  # fmt: skip


def _model_form(p: TextPage, info: ModelInfo | None) -> None:
    with gr.Row():
        p.model_id = gr.Textbox(label="Causal LM or adapter repo (Hub id)", scale=3,
                                value=info.model_id if info else settings.current().default_text_model)  # fmt: skip
        p.model_revision = gr.Textbox(label="Revision", value="main", scale=1)
        p.load_model_btn = gr.Button("Load model", scale=1)
    p.model_md = gr.Markdown(model_markdown(info))
    with gr.Row():
        p.repo_id = gr.Textbox(label="Adapter repo id", placeholder="org/name", scale=3)
        p.adapter_name = gr.Textbox(label="adapter_name (optional)", scale=2)
        p.adapter_revision = gr.Textbox(label="Revision", value="main", scale=1)
        p.load_adapter_btn = gr.Button("Load adapter", scale=1)


def _adapters(p: TextPage, on: TextHandlers, adapters: list[dict]) -> None:
    # Set again when each page loads (TextHandlers.ui_page_load): the resident set is shared and may have changed
    # since the app was built.
    ticks = kept_ticks(adapters, None)
    p.resident = gr.State(cards(adapters, ticks))
    p.ticks = gr.JSON(ticks, visible="hidden", elem_id="text-ticks")  # the ticked names: the request's list

    def on_delete(name, button):
        button.click(on.deleter(name), inputs_kwargs={"ticks": p.ticks}, outputs=_lists(p), **PRIVATE)

    def on_export(name, button):
        button.click(on.exporter(name), outputs=p.export_file, **PRIVATE)

    with gr.Column(elem_id="text-cards"):
        gr.Markdown("**Adapters**: tick the ones to use; Export gives your own as a zipped PEFT folder")

        @gr.render(inputs=[p.resident], show_progress="hidden")
        def adapter_cards(shown):
            draw_cards(shown, p.ticks, on_delete, on_export)

    p.export_file = gr.File(label="Exported adapter (PEFT folder, zipped)", height=90, visible=False,
                            elem_id="text-export")  # fmt: skip


def _add_and_train(p: TextPage, adapters: list[dict]) -> None:
    with gr.Accordion("Add a LoRA and train it", open=False):
        with gr.Row():
            p.new_name = gr.Textbox(label="adapter_name", value="mine")
            p.rank = gr.Number(label="r", value=8, precision=0, minimum=limits.RANK_MIN, maximum=limits.RANK_MAX)
            p.alpha = gr.Number(label="lora_alpha", value=16, minimum=0, maximum=limits.LORA_ALPHA_MAX)
            p.dropout = gr.Number(label="lora_dropout", value=0.0, minimum=0, maximum=0.99)
            p.targets = gr.Textbox(label="target_modules (comma-separated; empty: peft's default)")
            p.add_btn = gr.Button("Add LoRA")
        with gr.Row():
            p.train_name = gr.Dropdown(label="Adapter to train", choices=[a["adapter_name"] for a in adapters
                                                                        if a["trainable"]])  # fmt: skip
            p.train_steps = gr.Slider(limits.TRAIN_STEPS_MIN, limits.TRAIN_STEPS_MAX, value=60, step=1,
                                      label="Steps")  # fmt: skip
            p.learning_rate = gr.Number(label="Learning rate", value=0.01, minimum=0,
                                        maximum=limits.LEARNING_RATE_MAX)  # fmt: skip
        p.to_learn = gr.Textbox(label="Text to learn (an example is filled in)", lines=4, value=TRAIN_EXAMPLE,
                                placeholder="Paste text in the style to learn")  # fmt: skip
        p.train_note = gr.Markdown(elem_id="train-note")  # what training will see (TextHandlers.ui_train_note)
        p.train_btn = gr.Button("Train", variant="primary")
        p.loss_plot = gr.LinePlot(x="step", y="loss", x_title="step", y_title="loss", label="Training loss",
                                 height=220)  # fmt: skip
        p.train_md = gr.Markdown()


def _merge(p: TextPage) -> None:
    with gr.Accordion("Merge adapters with weights (add_weighted_adapter)", open=False):
        with gr.Row():
            p.merge_weights = gr.Textbox(label="adapters and weights", placeholder="pirate: 0.7, formal: 0.3",
                                         scale=3)  # fmt: skip
            p.merge_name = gr.Textbox(label="new adapter_name", value="merged", scale=2)
            p.merge_type = gr.Dropdown(label="combination_type", choices=list(MERGE_TYPES), value="linear", scale=2)
            p.density = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="density (ties, dare, prune)", scale=2)
            p.merge_btn = gr.Button("Merge", scale=1)
        p.merge_md = gr.Markdown(elem_id="merge-status")


def _generate(p: TextPage) -> None:
    with gr.Row():
        p.prompt = gr.Textbox(label="Prompt", value="the red circle", scale=3, elem_id="text-prompt")
        p.max_new_tokens = gr.Slider(limits.MAX_NEW_TOKENS_MIN, limits.MAX_NEW_TOKENS_MAX, value=24, step=1,
                                     label="max_new_tokens")  # fmt: skip
    with gr.Row():
        p.do_sample = gr.Checkbox(label="Sample (else greedy)", value=False)
        p.seed = gr.Number(label="Seed", value=0, precision=0, minimum=limits.SEED_MIN, maximum=limits.SEED_MAX)
        p.temperature = gr.Slider(limits.TEMPERATURE_MIN, limits.TEMPERATURE_MAX, value=1.0, step=0.01,
                                  label="Temperature")  # fmt: skip
        p.disabled = gr.Checkbox(label="Disable adapters (base output)", value=False)
    with gr.Row():
        p.generate_btn = gr.Button("Generate text", variant="primary", elem_id="generate-text")
        p.compare_btn = gr.Button("Compare base vs adapted", elem_id="compare-text")
    with gr.Row():
        p.output = gr.Textbox(label="Output", lines=3, elem_id="text-output")
        p.base_out = gr.Textbox(label="Base", lines=3, elem_id="text-base")
        p.adapted_out = gr.Textbox(label="Adapted", lines=3, elem_id="text-adapted")
    with gr.Accordion("Use via API", open=False):
        p.snippet = gr.Code(language="python", label="gradio_client: reproduces what is on screen",
                            elem_id="text-snippet")  # fmt: skip


def _lists(p: TextPage) -> list:
    """What changes with the resident set: the cards, their ticks and the training picker."""
    return [p.resident, p.ticks, p.train_name]


def _request_inputs(p: TextPage) -> set:
    """Everything a request is made of (TextHandlers.request reads them by component)."""
    return {p.prompt, p.ticks, p.disabled, p.max_new_tokens, p.do_sample, p.seed, p.temperature}


def wire(p: TextPage, on: TextHandlers) -> None:
    """Every event of the tab, each input given by name."""
    lists = _lists(p)
    # The training note: a new base has another vocabulary, so it follows loads as well as the text
    note = {"fn": on.ui_train_note, "inputs_kwargs": {"to_learn": p.to_learn}, "outputs": p.train_note,
            "show_progress": "hidden", **PRIVATE}  # fmt: skip
    p.to_learn.change(trigger_mode="always_last", **note)
    p.load_model_btn.click(on.ui_load_model, inputs_kwargs={"model_id": p.model_id, "revision": p.model_revision},
                           outputs=[p.model_md, *lists], show_progress_on=p.model_md,
                           **PRIVATE).success(**note)  # fmt: skip
    p.load_adapter_btn.click(on.ui_load_adapter, outputs=lists, show_progress_on=p.model_md, **PRIVATE,
                             inputs_kwargs={"repo_id": p.repo_id, "adapter_name": p.adapter_name,
                                            "revision": p.adapter_revision, "ticks": p.ticks})  # fmt: skip
    p.add_btn.click(on.ui_add_adapter, outputs=lists, **PRIVATE,
                    inputs_kwargs={"adapter_name": p.new_name, "r": p.rank, "alpha": p.alpha, "dropout": p.dropout,
                                   "targets": p.targets, "ticks": p.ticks})  # fmt: skip
    p.merge_btn.click(on.ui_merge, outputs=[p.merge_md, *lists], **PRIVATE,
                      inputs_kwargs={"weights": p.merge_weights, "new_name": p.merge_name,
                                     "combination_type": p.merge_type, "density": p.density,
                                     "ticks": p.ticks})  # fmt: skip
    p.train_btn.click(on.ui_train, outputs=[p.loss_plot, p.train_md, *lists], **PRIVATE,
                      inputs_kwargs={"adapter_name": p.train_name, "to_learn": p.to_learn, "steps": p.train_steps,
                                     "learning_rate": p.learning_rate, "ticks": p.ticks})  # fmt: skip
    request = _request_inputs(p)
    generate = {"fn": on.ui_generate, "inputs": request, "outputs": p.output, **PRIVATE, **TEXT_GENERATION}
    p.generate_btn.click(**generate)
    p.compare_btn.click(on.ui_compare, request, [p.base_out, p.adapted_out], **PRIVATE, **TEXT_GENERATION)
    # A preset loads what it needs, then generates (as the Images tab's presets do).
    for i, button in enumerate(p.preset_btns):
        loaded = button.click(on.presetter(i), None, [p.model_md, p.model_id, p.prompt, *lists],
                              show_progress_on=p.model_md, **PRIVATE)  # fmt: skip
        loaded.success(**note)
        loaded.success(**generate)
    gr.on([c.change for c in request], on.ui_snippet, request, p.snippet, **PRIVATE)
