"""The Text tab: a causal LM, its PEFT adapters, add / train / merge, generate, compare."""

import queue
import tempfile
import threading
import time

import gradio as gr

from peft_core import bundled, limits, presets, turns
from peft_core.text.merge import MERGE_TYPES
from peft_core.text.studio import TextStudio
from ui.common import (
    choices_update,
    gpu,
    hub_progress,
    page_url,
    still_wanted,
    user_errors,
    user_errors_gen,
)
from ui.snippets import text_snippet

TEXT_COLUMNS = ["adapter_name", "repo_id", "source", "peft_type", "r", "lora_alpha", "target_modules", "trainable",
                "steps_trained"]  # fmt: skip
EXPORT_DIR = tempfile.gettempdir()


def text_rows(adapters: list[dict]) -> list[list]:
    return [[a.get(c) if c != "target_modules" else ", ".join(a[c]) for c in TEXT_COLUMNS] for a in adapters]


def model_markdown(info: dict | None) -> str:
    if not info:
        return "No text model loaded."
    return (
        f"**{info['model_id']}** @ `{info['revision']}` — {info['model_class']} on {info['device']} "
        f"({info['dtype']}), {info['num_parameters']:,} parameters"
    )


def parse_weights(value: str) -> dict[str, float]:
    """"pirate: 0.7, formal: 0.3" -> {"pirate": 0.7, "formal": 0.3}; the core checks names and numbers."""
    weights = {}
    for part in filter(None, (p.strip() for p in (value or "").split(","))):
        name, _, weight = part.partition(":")
        try:
            weights[name.strip()] = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise gr.Error(f"weight {weight.strip()!r} for {name.strip()!r} is not a number") from None
    return weights


def build_text_tab(studio: TextStudio):
    """The Text tab. Returns (fn, outputs) for the app to run when a page loads (see ui_page_load)."""
    """The Text tab's components and events, inside the caller's Blocks."""

    def refreshed(adapters):
        names = [a["adapter_name"] for a in adapters]
        trainable = [a["adapter_name"] for a in adapters if a["trainable"]]
        return text_rows(adapters), gr.update(choices=names, value=names[:1]), choices_update(names), \
            choices_update(trainable)  # fmt: skip

    @user_errors
    def ui_load_model(model_id, revision, progress=gr.Progress()):
        with hub_progress(progress, f"loading {model_id}"):
            info = studio.load_model(model_id, revision or "main")
        return (model_markdown(info), *refreshed(studio.list_adapters()))

    @user_errors
    def ui_load_adapter(repo_id, adapter_name, revision, progress=gr.Progress()):
        with hub_progress(progress, f"loading {repo_id}"):
            return refreshed(studio.load_adapter(repo_id, adapter_name, revision or "main"))

    @user_errors
    def ui_add_adapter(adapter_name, r, alpha, dropout, targets):
        return refreshed(studio.add_adapter(adapter_name, int(r), float(alpha), float(dropout), targets))

    @user_errors
    def ui_delete(adapter_name):
        if not adapter_name:
            raise gr.Error("choose an adapter to delete")
        return refreshed(studio.delete_adapter(adapter_name))

    @user_errors
    @gpu
    def ui_merge(weights, new_name, combination_type, density):
        return refreshed(studio.merge_adapters(parse_weights(weights), new_name, combination_type, density))

    @user_errors_gen
    def ui_train(adapter_name, to_learn, steps, learning_rate, http: gr.Request = None):
        """Train in a worker thread and stream the loss curve to the page as it goes."""
        if not adapter_name:
            raise gr.Error("add an adapter first (Add a LoRA), then choose it here")
        losses: queue.Queue = queue.Queue()
        outcome: dict = {}
        wanted = still_wanted(http, "ui_train")  # read here: the worker thread cannot reach the event loop

        def work():
            try:
                # gradio closes this generator when the tab goes; the training stops at its next step then
                with turns.watch(lambda: not outcome.get("closed") and (wanted is None or wanted())):
                    outcome["result"] = studio.train_adapter(
                        adapter_name, to_learn, int(steps), float(learning_rate),
                        progress=lambda step, total, loss: losses.put((step, loss)),
                    )  # fmt: skip
            except Exception as exc:  # re-raised in the handler's thread, where Gradio reports it
                outcome["error"] = exc
            losses.put(None)

        threading.Thread(target=work, daemon=True).start()
        points, shown = [], 0.0
        try:
            while (item := losses.get()) is not None:
                points.append({"step": item[0], "loss": item[1]})
                if time.monotonic() - shown > 0.25:  # a few frames a second is smooth; one per step would flood
                    shown = time.monotonic()
                    yield gr.update(value=_frame(points)), f"step {item[0]} / {int(steps)}: loss {item[1]:.3f}"
        finally:
            outcome["closed"] = True
        if "error" in outcome:
            raise outcome["error"]
        r = outcome["result"]
        yield gr.update(value=_frame(points)), f"trained **{r['adapter_name']}** for {r['steps']} steps: loss " \
            f"{r['loss_start']:.3f} → {r['loss_end']:.3f}"  # fmt: skip

    @user_errors
    def ui_export(adapter_name):
        if not adapter_name:
            raise gr.Error("choose an adapter to export")
        return str(studio.export_adapter(adapter_name, tempfile.mkdtemp(dir=EXPORT_DIR)))

    @user_errors
    @gpu
    def ui_generate(prompt, active, disabled, max_new_tokens, do_sample, seed, temperature, http: gr.Request = None):
        with turns.watch(still_wanted(http, "ui_generate")):  # stops between tokens once the tab is closed
            return studio.generate(prompt, active or [], not disabled, int(max_new_tokens), do_sample, int(seed),
                                   float(temperature))  # fmt: skip

    @user_errors
    @gpu
    def ui_compare(prompt, active, max_new_tokens, do_sample, seed, temperature, http: gr.Request = None):
        with turns.watch(still_wanted(http, "ui_compare")):
            return studio.compare(prompt, active or [], int(max_new_tokens), do_sample, int(seed), float(temperature))

    text_presets = [p for p in presets.presets("text") if p.thumbnail.exists()]

    @user_errors
    def ui_preset(progress=gr.Progress(), evt: gr.SelectData = None):
        preset = text_presets[evt.index]
        with hub_progress(progress, f"loading {preset.name}"):
            mix = presets.apply(preset, studio)
        table_rows, active, delete, train = refreshed(studio.list_adapters())
        names = active["choices"]
        active = gr.update(choices=names, value=[n for n in names if n in mix])
        return model_markdown(studio.model_info()), preset.base, preset.prompt, table_rows, active, delete, train

    def ui_snippet(prompt, active, disabled, max_new_tokens, do_sample, seed, temperature, http: gr.Request):
        return text_snippet(page_url(http), prompt, active or [], not disabled, int(max_new_tokens), do_sample,
                            int(seed), float(temperature))  # fmt: skip

    info = studio.model_info() if studio.info else None
    adapters = studio.list_adapters() if info else []
    names = [a["adapter_name"] for a in adapters]

    gallery = gr.Gallery(
        value=[(str(p.thumbnail), f"{p.name}: {p.note}") for p in text_presets],
        label="Presets (the bundled demos work offline; the others need the Hub)",
        columns=7, height=200, allow_preview=False, interactive=False, elem_id="text-presets",
    )  # fmt: skip
    with gr.Row():
        model_id = gr.Textbox(label="Causal LM or adapter repo (Hub id)", scale=3,
                              value=info["model_id"] if info else bundled.DEFAULT_TEXT_MODEL)  # fmt: skip
        model_revision = gr.Textbox(label="Revision", value="main", scale=1)
        load_model_btn = gr.Button("Load model", scale=1)
    model_md = gr.Markdown(model_markdown(info))
    with gr.Row():
        repo_id = gr.Textbox(label="Adapter repo id", placeholder="org/name", scale=3)
        adapter_name = gr.Textbox(label="adapter_name (optional)", scale=2)
        adapter_revision = gr.Textbox(label="Revision", value="main", scale=1)
        load_adapter_btn = gr.Button("Load adapter", scale=1)
    table = gr.Dataframe(value=text_rows(adapters), headers=TEXT_COLUMNS, interactive=False, label="Adapters",
                         elem_id="text-adapter-table")  # fmt: skip
    with gr.Row():
        active = gr.CheckboxGroup(label="Active adapters (this request)", choices=names, value=names[:1], scale=3)
        delete_name = gr.Dropdown(label="Adapter to delete / export", choices=names, scale=2)
        delete_btn = gr.Button("Delete", variant="stop", scale=1)
        export_btn = gr.Button("Export (PEFT folder, zipped)", scale=1)
    export_file = gr.File(label="Exported adapter", height=90)
    with gr.Accordion("Add a LoRA and train it", open=False):
        with gr.Row():
            new_name = gr.Textbox(label="adapter_name", value="mine")
            rank = gr.Number(label="r", value=8, precision=0, minimum=limits.RANK_MIN, maximum=limits.RANK_MAX)
            alpha = gr.Number(label="lora_alpha", value=16, minimum=0, maximum=limits.LORA_ALPHA_MAX)
            dropout = gr.Number(label="lora_dropout", value=0.0, minimum=0, maximum=0.99)
            targets = gr.Textbox(label="target_modules (comma-separated; empty: peft's default)")
            add_btn = gr.Button("Add LoRA")
        with gr.Row():
            train_name = gr.Dropdown(label="Adapter to train", choices=[a["adapter_name"] for a in adapters
                                                                      if a["trainable"]])  # fmt: skip
            train_steps = gr.Slider(limits.TRAIN_STEPS_MIN, limits.TRAIN_STEPS_MAX, value=60, step=1, label="Steps")
            learning_rate = gr.Number(label="Learning rate", value=0.01, minimum=0, maximum=limits.LEARNING_RATE_MAX)
        to_learn = gr.Textbox(label="Text to learn", lines=4, placeholder="Paste text in the style to learn")
        train_btn = gr.Button("Train", variant="primary")
        loss_plot = gr.LinePlot(x="step", y="loss", label="Training loss", height=220)
        train_md = gr.Markdown()
    with gr.Accordion("Merge adapters with weights (add_weighted_adapter)", open=False):
        with gr.Row():
            merge_weights = gr.Textbox(label="adapters and weights", placeholder="pirate: 0.7, formal: 0.3", scale=3)
            merge_name = gr.Textbox(label="new adapter_name", value="merged", scale=2)
            merge_type = gr.Dropdown(label="combination_type", choices=list(MERGE_TYPES), value="linear", scale=2)
            density = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="density (ties, dare, prune)", scale=2)
            merge_btn = gr.Button("Merge", scale=1)
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", value="the red circle", scale=3, elem_id="text-prompt")
        max_new_tokens = gr.Slider(limits.MAX_NEW_TOKENS_MIN, limits.MAX_NEW_TOKENS_MAX, value=24, step=1,
                                   label="max_new_tokens")
    with gr.Row():
        do_sample = gr.Checkbox(label="Sample (else greedy)", value=False)
        seed = gr.Number(label="Seed", value=0, precision=0, minimum=limits.SEED_MIN, maximum=limits.SEED_MAX)
        temperature = gr.Slider(limits.TEMPERATURE_MIN, limits.TEMPERATURE_MAX, value=1.0, step=0.01,
                                label="Temperature")
        disabled = gr.Checkbox(label="Disable adapters (base output)", value=False)
    with gr.Row():
        generate_btn = gr.Button("Generate text", variant="primary", elem_id="generate-text")
        compare_btn = gr.Button("Compare base vs adapted", elem_id="compare-text")
    with gr.Row():
        output = gr.Textbox(label="Output", lines=3, elem_id="text-output")
        base_out = gr.Textbox(label="Base", lines=3, elem_id="text-base")
        adapted_out = gr.Textbox(label="Adapted", lines=3, elem_id="text-adapted")
    with gr.Accordion("Use via API", open=False):
        snippet = gr.Code(language="python", label="gradio_client: reproduces what is on screen")

    private = {"api_visibility": "private"}  # the page's own events; the named API is ui/api.py
    lists = [table, active, delete_name, train_name]
    load_model_btn.click(ui_load_model, [model_id, model_revision], [model_md, *lists], show_progress_on=model_md,
                         **private)  # fmt: skip
    load_adapter_btn.click(ui_load_adapter, [repo_id, adapter_name, adapter_revision], lists, show_progress_on=table,
                           **private)  # fmt: skip
    add_btn.click(ui_add_adapter, [new_name, rank, alpha, dropout, targets], lists, **private)
    delete_btn.click(ui_delete, [delete_name], lists, **private)
    merge_btn.click(ui_merge, [merge_weights, merge_name, merge_type, density], lists, **private)
    train_btn.click(ui_train, [train_name, to_learn, train_steps, learning_rate], [loss_plot, train_md], **private)
    export_btn.click(ui_export, [delete_name], export_file, **private)
    settings = [max_new_tokens, do_sample, seed, temperature]
    generate_btn.click(ui_generate, [prompt, active, disabled, *settings], output, **private)
    compare_btn.click(ui_compare, [prompt, active, *settings], [base_out, adapted_out], **private)
    gallery.select(ui_preset, None, [model_md, model_id, prompt, *lists], show_progress_on=model_md, **private)
    shown = [prompt, active, disabled, *settings]
    gr.on([c.change for c in shown], ui_snippet, shown, snippet, **private)

    @user_errors
    def ui_page_load():
        """What the page shows of the studio, read when the page loads (the defaults may still be loading)."""
        studio.startup.wait()
        info = studio.model_info() if studio.info else None
        return (info["model_id"] if info else bundled.DEFAULT_TEXT_MODEL, model_markdown(info),
                *refreshed(studio.list_adapters() if info else []))

    return ui_page_load, [model_id, model_md, table, active, delete_name, train_name]


def _frame(points):
    import pandas as pd

    return pd.DataFrame(points, columns=["step", "loss"])
