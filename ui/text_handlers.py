"""What the Text tab's events do: each handler a few lines into the text studio.

Handlers receive their inputs by parameter name (gradio's `inputs_kwargs`) and answer with a dict keyed by the
page's components where they set more than one. `p` is the page (ui/text_tab.py, TextPage).
"""

import contextvars
import queue
import tempfile
import threading
import time

import gradio as gr

from peft_core import StudioError, bundled, limits, presets, turns
from peft_core.text.studio import TextStudio
from ui.common import choices_update, gpu, hub_progress, page_url, still_wanted, user_errors, user_errors_gen
from ui.preset_gallery import check_available, gallery_items
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
    """'pirate: 0.7, formal: 0.3' -> {"pirate": 0.7, "formal": 0.3} ('pirate' alone means weight 1); the core
    checks names and numbers."""
    weights = {}
    for part in filter(None, (p.strip() for p in (value or "").split(","))):
        name, colon, weight = part.partition(":")
        try:
            if not colon and len(part.split()) > 1:
                raise ValueError(part)
            weights[name.strip()] = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise gr.Error(f"{part!r} is not `name: weight`; write the adapters and weights like "
                           "'pirate: 0.7, formal: 0.3'") from None  # fmt: skip
    return weights


def merge_note(weights: dict[str, float], combination_type: str, made: dict) -> str:
    """What a merge made, in a line: its name, its parts, how, its rank."""
    parts = " + ".join(f"{w:g} × {name}" for name, w in weights.items())
    return f"Made **{made['adapter_name']}** = {parts} ({combination_type}, rank {made.get('r')}); tick it to use it."


# The training box's example: words the bundled tiny LM knows (any other model's tokenizer knows them too), so the
# first run learns something instead of training on <unk>.
TRAIN_EXAMPLE = "the captain sails the pirate ship to the island . arr , the gold map ! " * 3


def train_note(seen: dict) -> str:
    """What training will see of the text (TextStudio.training_preview), in a line or two shown before Train."""
    tokens, top, block, blocks = seen["tokens"], seen["max_tokens"], seen["block_tokens"], seen["blocks"]
    if tokens < 2:
        return "Paste a few sentences in the style to learn."
    lines = [f"**{tokens:,} tokens** (a run trains on at most {top:,})"]
    if tokens > top:
        lines[0] += f": **{tokens - top:,} too many**, Train will refuse it; shorten the text"
    if blocks > 1:
        lines.append(f"cut into {blocks} blocks of at most {block} tokens, the model's context: nothing is dropped, "
                     "but no block sees the one before")  # fmt: skip
    if seen["unknown"]:
        words = ", ".join(f"`{w}`" for w in seen["unknown_words"])  # the first few, in order
        lines.append(f"**{seen['unknown']} tokens are outside the model's vocabulary** and become `<unk>`: the "
                     f"adapter learns nothing from them (words: {words})")  # fmt: skip
    else:
        lines.append("every word is in the model's vocabulary")
    return " · ".join(lines)


def _frame(points):
    import pandas as pd

    return pd.DataFrame(points, columns=["step", "loss"])


class TextHandlers:
    """The Text tab's event handlers over one studio."""

    def __init__(self, studio: TextStudio, page):
        self.studio, self.p = studio, page
        self.presets = [p for p in presets.presets("text") if p.thumbnail.exists()]

    def gallery(self) -> list:
        """The presets, those this machine cannot run (no Hub) greyed with the reason."""
        return gallery_items(self.presets, self.studio.device)

    def refreshed(self, adapters, active: list | None = None) -> dict:
        """The table and the adapter pickers, after the resident set changed. `active`: the ticks the page had,
        kept for the adapters still there (None, for a new base: the first adapter ticked)."""
        p = self.p
        names = [a["adapter_name"] for a in adapters]
        trainable = [a["adapter_name"] for a in adapters if a["trainable"]]
        ticked = names[:1] if active is None else [n for n in active if n in names]
        return {p.table: text_rows(adapters), p.active: gr.update(choices=names, value=ticked),
                p.delete_name: choices_update(names), p.train_name: choices_update(trainable)}  # fmt: skip

    @user_errors
    def ui_load_model(self, model_id, revision, progress=gr.Progress()):
        with hub_progress(progress, f"loading {model_id}", [(model_id, revision)]):
            info = self.studio.load_model(model_id, revision or "main")
        return {self.p.model_md: model_markdown(info), **self.refreshed(self.studio.list_adapters())}

    # Adding, loading, merging or deleting an adapter keeps the page's ticks (`active`) as they were.
    @user_errors
    def ui_load_adapter(self, repo_id, adapter_name, revision, active, progress=gr.Progress()):
        with hub_progress(progress, f"loading {repo_id}", [(repo_id, revision)]):
            return self.refreshed(self.studio.load_adapter(repo_id, adapter_name, revision or "main"), active or [])

    @user_errors
    def ui_add_adapter(self, adapter_name, r, alpha, dropout, targets, active):
        adapters = self.studio.add_adapter(adapter_name, int(r), float(alpha), float(dropout), targets)
        return self.refreshed(adapters, active or [])

    @user_errors
    def ui_delete(self, adapter_name, active):
        if not adapter_name:
            raise gr.Error("choose an adapter to delete")
        return self.refreshed(self.studio.delete_adapter(adapter_name), active or [])

    @user_errors
    @gpu
    def ui_merge(self, weights, new_name, combination_type, density, active):
        weights = parse_weights(weights)
        adapters = self.studio.merge_adapters(weights, new_name, combination_type, density)
        made = next(a for a in adapters if a["adapter_name"] == limits.check_adapter_name(new_name))
        return {self.p.merge_md: merge_note(weights, combination_type, made), **self.refreshed(adapters, active or [])}

    @user_errors
    def ui_train_note(self, to_learn):
        """The note under the training text, updated as it changes: tokens, <unk>, blocks (train_note)."""
        try:
            return train_note(self.studio.training_preview(to_learn or ""))
        except StudioError as exc:  # no model yet, or a text over the limit: said in the note, not a toast a key
            return str(exc)

    @user_errors_gen
    def ui_train(self, adapter_name, to_learn, steps, learning_rate, http: gr.Request = None):
        """Train in a worker thread and stream the loss curve to the page as it goes."""
        if not adapter_name:
            raise gr.Error("add an adapter first (Add a LoRA), then choose it here")
        p, losses, outcome = self.p, queue.Queue(), {}
        wanted = still_wanted(http, "ui_train")  # read here: the worker thread cannot reach the event loop

        def work():
            try:
                # gradio closes this generator when the tab goes; the training stops at its next step then
                with turns.watch(lambda: not outcome.get("closed") and (wanted is None or wanted())):
                    outcome["result"] = self.studio.train_adapter(
                        adapter_name, to_learn, int(steps), float(learning_rate),
                        progress=lambda step, total, loss: losses.put((step, loss)),
                    )  # fmt: skip
            except Exception as exc:  # re-raised in the handler's thread, where Gradio reports it
                outcome["error"] = exc
            losses.put(None)

        # A new thread starts with an empty context: run the worker in a copy of this one, so that it calls the
        # core as this visitor's session (sessions.bound, set by user_errors_gen), not as the admin.
        threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True).start()
        points, shown = [], 0.0
        try:
            while (item := losses.get()) is not None:
                points.append({"step": item[0], "loss": item[1]})
                if time.monotonic() - shown > 0.25:  # a few frames a second is smooth; one per step would flood
                    shown = time.monotonic()
                    yield {p.loss_plot: gr.update(value=_frame(points)),
                           p.train_md: f"step {item[0]} / {int(steps)}: loss {item[1]:.3f}"}  # fmt: skip
        finally:
            outcome["closed"] = True
        if "error" in outcome:
            raise outcome["error"]
        r = outcome["result"]
        yield {p.loss_plot: gr.update(value=_frame(points)), p.train_md: f"trained **{r['adapter_name']}** for "
               f"{r['steps']} steps: loss {r['loss_start']:.3f} → {r['loss_end']:.3f}"}  # fmt: skip

    @user_errors
    def ui_export(self, adapter_name):
        if not adapter_name:
            raise gr.Error("choose an adapter to export")
        return str(self.studio.export_adapter(adapter_name, tempfile.mkdtemp(dir=EXPORT_DIR)))

    @user_errors
    @gpu
    def ui_generate(self, prompt, active, disabled, max_new_tokens, do_sample, seed, temperature,
                    http: gr.Request = None):  # fmt: skip
        with turns.watch(still_wanted(http, "ui_generate")):  # stops between tokens once the tab is closed
            return self.studio.generate(prompt, active or [], not disabled, int(max_new_tokens), do_sample,
                                        int(seed), float(temperature))  # fmt: skip

    @user_errors
    @gpu
    def ui_compare(self, prompt, active, max_new_tokens, do_sample, seed, temperature, http: gr.Request = None):
        with turns.watch(still_wanted(http, "ui_compare")):
            base, adapted = self.studio.compare(prompt, active or [], int(max_new_tokens), do_sample, int(seed),
                                                float(temperature))  # fmt: skip
        return {self.p.base_out: base, self.p.adapted_out: adapted}

    @user_errors
    def ui_preset(self, progress=gr.Progress(), evt: gr.SelectData = None):
        p, preset = self.p, self.presets[evt.index]
        check_available(preset, self.studio.device)
        needs = [(preset.base, "main"), *((a.repo_id, "main") for a in preset.adapters)]
        with hub_progress(progress, f"loading {preset.name}", needs):
            mix = presets.apply(preset, self.studio)
        shown = self.refreshed(self.studio.list_adapters())
        names = shown[p.active]["choices"]
        shown[p.active] = gr.update(choices=names, value=[n for n in names if n in mix])
        return {p.model_md: model_markdown(self.studio.model_info()), p.model_id: preset.base,
                p.prompt: preset.prompt, **shown}  # fmt: skip

    @user_errors  # binds the visitor's session: which of the active adapters are its own
    def ui_snippet(self, prompt, active, disabled, max_new_tokens, do_sample, seed, temperature, http: gr.Request):
        own = [a["adapter_name"] for a in self.studio.list_adapters() if not a.get("shared", True)]
        return text_snippet(page_url(http), prompt, active or [], not disabled, int(max_new_tokens), do_sample,
                            int(seed), float(temperature), own=own)  # fmt: skip

    @user_errors
    def ui_page_load(self):
        """What the page shows of the studio, read when the page loads (the defaults may still be loading)."""
        studio = self.studio
        studio.startup.wait()
        info = studio.model_info() if studio.info else None
        return {self.p.model_id: info["model_id"] if info else bundled.DEFAULT_TEXT_MODEL,
                self.p.model_md: model_markdown(info), self.p.gallery: self.gallery(),
                self.p.train_note: self.ui_train_note.__wrapped__(self, TRAIN_EXAMPLE) if info else "",
                **self.refreshed(studio.list_adapters() if info else [])}  # fmt: skip
