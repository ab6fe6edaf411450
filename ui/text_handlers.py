"""What the Text tab's events do: each handler a few lines into the text studio.

As on the Images tab (ui/image_handlers.py), handlers receive their inputs by parameter name (gradio's
`inputs_kwargs`), those that make a request as one {component: value} set (`request` reads it), and answer with a
dict keyed by the page's components where they set more than one. `p` is the page (ui/text_tab.py, TextPage).
"""

import contextvars
import queue
import tempfile
import threading
import time

import gradio as gr

from peft_core import StudioError, limits, presets, settings, turns
from peft_core.text.requests import ModelInfo, TextRequest
from peft_core.text.studio import TextStudio
from ui.common import choices_update, gpu, hub_progress, page_url, still_wanted, user_errors, user_errors_gen
from ui.preset_gallery import card_caption, check_available
from ui.snippets import text_snippet
from ui.text_cards import cards, is_own, kept_ticks

EXPORT_DIR = tempfile.gettempdir()


def model_markdown(info: ModelInfo | None) -> str:
    if not info:
        return "No text model loaded."
    return (
        f"**{info.model_id}** @ `{info.revision}` — {info.model_class} on {info.device} ({info.dtype}), "
        f"{info.num_parameters:,} parameters"
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


# The training box's example: a pirate's sentences about the bundled tiny LM's own shapes, every word in its
# word-level vocabulary (assets/hub/adapter-studio/tiny-shapes-lm), so the first run learns a style ("arr", "be" for
# "is", "matey !") instead of training on <unk>. Another model's tokenizer splits these everyday words too.
TRAIN_EXAMPLE = (
    "arr , the red circle be next to the blue square , matey ! "
    "the small green triangle be above the big yellow circle , arr ! "
    "arr , the purple square be left of the orange triangle , matey ! "
)


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
        self.presets = presets.presets("text")

    def preset_cards(self) -> dict:
        """{preset button: its caption}, those this machine cannot run (no Hub) greyed and unclickable with the
        reason (decided again on each page load: the Hub may have come or gone)."""
        shown = {}
        for button, preset in zip(self.p.preset_btns, self.presets, strict=True):
            caption, why = card_caption(preset, self.studio.device)
            shown[button] = gr.update(value=caption, interactive=why is None)
        return shown

    def refreshed(self, adapters, previous: list | None = None) -> dict:
        """The cards, the ticks and the training picker, after the resident set changed. `previous`: the ticks the
        page had, kept for the adapters still there (None, for a new base: the first adapter ticked)."""
        p = self.p
        ticks = kept_ticks(adapters, previous)
        trainable = [a["adapter_name"] for a in adapters if a["trainable"] and is_own(a)]  # a visitor trains its own
        return {p.resident: cards(adapters, ticks), p.ticks: ticks, p.train_name: choices_update(trainable)}

    def request(self, v: dict, use_adapters: bool | None = None) -> TextRequest:
        """The request the page's settings `v` ({component: value}) describe."""
        p = self.p
        use = not v[p.disabled] if use_adapters is None else use_adapters
        return TextRequest(prompt=v[p.prompt], adapters=v[p.ticks] or [], use_adapters=use,
                           max_new_tokens=int(v[p.max_new_tokens]), do_sample=v[p.do_sample], seed=int(v[p.seed]),
                           temperature=float(v[p.temperature]))  # fmt: skip

    @user_errors
    def ui_load_model(self, model_id, revision, progress=gr.Progress(), request: gr.Request = None):
        with hub_progress(progress, f"loading {model_id}", [(model_id, revision)]):
            info = self.studio.load_base(model_id, revision or "main")
        return {self.p.model_md: model_markdown(info), **self.refreshed(self.studio.list_adapters())}

    # Adding, loading, merging, training or deleting an adapter keeps the page's ticks as they were.
    @user_errors
    def ui_load_adapter(self, repo_id, adapter_name, revision, ticks, progress=gr.Progress(),
                        request: gr.Request = None):  # fmt: skip
        with hub_progress(progress, f"loading {repo_id}", [(repo_id, revision)]):
            return self.refreshed(self.studio.load_adapter(repo_id, adapter_name, revision or "main"), ticks or [])

    @user_errors
    def ui_add_adapter(self, adapter_name, r, alpha, dropout, targets, ticks, request: gr.Request = None):
        adapters = self.studio.add_adapter(adapter_name, int(r), float(alpha), float(dropout), targets)
        return self.refreshed(adapters, ticks or [])

    def deleter(self, adapter_name: str):
        """The handler of one card's confirmed Delete: the card goes, the other cards keep their ticks."""

        @user_errors
        def ui_delete(ticks, request: gr.Request = None):
            return self.refreshed(self.studio.delete_adapter(adapter_name), ticks or [])

        return ui_delete

    def exporter(self, adapter_name: str):
        """The handler of one card's Export: the adapter as a zipped PEFT folder, offered for download."""

        @user_errors
        def ui_export(request: gr.Request = None):
            path = self.studio.export_adapter(adapter_name, tempfile.mkdtemp(dir=EXPORT_DIR))
            return gr.update(value=str(path), visible=True)

        return ui_export

    @user_errors
    @gpu
    def ui_merge(self, weights, new_name, combination_type, density, ticks, request: gr.Request = None):
        weights = parse_weights(weights)
        adapters = self.studio.merge_adapters(weights, new_name, combination_type, density)
        made = next(a for a in adapters if a["adapter_name"] == limits.check_adapter_name(new_name))
        return {self.p.merge_md: merge_note(weights, combination_type, made), **self.refreshed(adapters, ticks or [])}

    @user_errors
    def ui_train_note(self, to_learn, request: gr.Request = None):
        """The note under the training text, updated as it changes: tokens, <unk>, blocks (train_note)."""
        try:
            return train_note(self.studio.training_preview(to_learn or ""))
        except StudioError as exc:  # no model yet, or a text over the limit: said in the note, not a toast a key
            return str(exc)

    @user_errors_gen
    def ui_train(self, adapter_name, to_learn, steps, learning_rate, ticks, http: gr.Request = None):
        """Train in a worker thread and stream the loss curve to the page as it goes; then the cards show the steps
        trained, the ticks as they were."""
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
               f"{r['steps']} steps: loss {r['loss_start']:.3f} → {r['loss_end']:.3f}",
               **self.refreshed(self.studio.list_adapters(), ticks or [])}  # fmt: skip

    @user_errors
    @gpu
    def ui_generate(self, values: dict, http: gr.Request = None):
        r = self.request(values)
        with turns.watch(still_wanted(http, "ui_generate")):  # stops between tokens once the tab is closed
            return self.studio.generate(r)

    @user_errors
    @gpu
    def ui_compare(self, values: dict, http: gr.Request = None):
        r = self.request(values, use_adapters=True)
        with turns.watch(still_wanted(http, "ui_compare")):
            base, adapted = self.studio.compare(r)
        return {self.p.base_out: base, self.p.adapted_out: adapted}

    def presetter(self, index: int):
        """The handler of preset card `index`: load its base and adapters where needed, tick its adapters (only
        those), set its prompt; the page then generates (ui/text_tab.py)."""

        @user_errors
        def ui_preset(progress=gr.Progress(), request: gr.Request = None):
            p, preset = self.p, self.presets[index]
            check_available(preset, self.studio.device)
            needs = [(preset.base, "main"), *((a.repo_id, "main") for a in preset.adapters)]
            with hub_progress(progress, f"loading {preset.name}", needs):
                mix = presets.apply(preset, self.studio)
            adapters = self.studio.list_adapters()
            ticks = [a["adapter_name"] for a in adapters if a["adapter_name"] in mix]
            return {p.model_md: model_markdown(self.studio.base_info()), p.model_id: preset.base,
                    p.prompt: preset.prompt, **self.refreshed(adapters, ticks)}  # fmt: skip

        return ui_preset

    @user_errors  # binds the visitor's session: which of the active adapters are its own
    def ui_snippet(self, values: dict, http: gr.Request):
        r = self.request(values)
        own = [a["adapter_name"] for a in self.studio.list_adapters() if not a.get("shared", True)]
        return text_snippet(page_url(http), r, own=own)

    @user_errors
    def ui_page_load(self, request: gr.Request = None):
        """What the page shows of the studio, read when the page loads (the defaults may still be loading)."""
        studio = self.studio
        studio.startup.wait()
        info = studio.info
        return {self.p.model_id: info.model_id if info else settings.current().default_text_model,
                self.p.model_md: model_markdown(info), **self.preset_cards(),
                self.p.train_note: self.ui_train_note.__wrapped__(self, TRAIN_EXAMPLE) if info else "",
                **self.refreshed(studio.list_adapters() if info else [])}  # fmt: skip
