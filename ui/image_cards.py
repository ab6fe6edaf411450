"""The resident image adapters as cards: the page's editable view of the mix.

The cards' ticks live in the browser as {adapter_name: [ticked, weight]} in a hidden JSON component (the Text
tab's cards keep theirs the same way, as a list of names: ui/text_cards.py): each card's checkbox and slider write
their own entry there at once (a JavaScript-only event, no round trip and no race between two quick moves), and
generate, compare, sweep, the snippet and export read it. The server-side State only says which cards to draw,
with the ticks to start them at.
"""

import json

import gradio as gr

from peft_core.limits import WEIGHT_MAX, WEIGHT_MIN
from ui.common import PRIVATE, next_card_version, shared_tag
from ui.descriptions import description, report_line

WEIGHT_STEP = 0.05
THUMB_PX = 56  # a card's picture on the page: small, beside the controls (the file is up to limits.THUMBNAIL_PX)


def kept_ticks(adapters: list[dict], previous: dict | None = None) -> dict[str, list]:
    """The ticks {adapter_name: [ticked, weight]} for every resident adapter, keeping what the page had (`previous`)
    for known names. New ones start unticked at weight 1, but the first adapter of an empty page starts ticked so
    that the first image already shows an effect."""
    previous = previous or {}
    return {a["adapter_name"]: list(previous.get(a["adapter_name"], [not previous and i == 0, 1.0]))
            for i, a in enumerate(adapters)}  # fmt: skip


def mix_of(ticks: dict | None) -> dict[str, float]:
    """The request's mix: every active adapter at its weight (the core checks names and values)."""
    return {str(name): float(weight) for name, (active, weight) in (ticks or {}).items() if active}


def cards(adapters: list[dict], ticks: dict) -> dict:
    """What the cards' State holds: the adapters to draw and the ticks to start them at."""
    return {"adapters": adapters, "ticks": ticks, "version": next_card_version()}


def facts_markdown(a: dict) -> str:
    """One line of an adapter's facts: where it came from, its rank, the parts it touches, size, trigger words."""
    triggers = ", ".join(a["trigger_words"])
    return (f"`{a['repo_id']}` @ `{a['revision']}` · `{a['weight_name']}` · rank {a['rank']} · "
            f"{', '.join(a['components'])} · {a['size_mb']} MB" + (f" · trigger words: *{triggers}*" if triggers
                                                                    else ""))  # fmt: skip


def _set_tick_js(name: str) -> str:
    """The browser-side update of one card's entry in the mix, from its checkbox and slider."""
    return f"(ticks, active, weight) => ({{...(ticks || {{}}), {json.dumps(name)}: [active, weight]}})"


def draw_cards(shown: dict, ticks: gr.JSON, on_delete) -> None:
    """The cards of `shown` (a `cards(...)` value), inside the caller's @gr.render. `on_delete(name)` wires one
    card's Delete button; a shared card (the Space's, which a visitor cannot delete: docs/SESSIONS.md) has a
    "shared" tag instead. A card's picture (its "thumbnail", peft_core/image/thumbnails.py) sits beside its
    controls once made."""
    if not shown["adapters"]:
        gr.Markdown("No adapter loaded yet: load one by Hub id above, or pick a preset.")
    for a in shown["adapters"]:
        name = a["adapter_name"]
        active, weight = shown["ticks"].get(name, [False, 1.0])
        delete = None
        with gr.Group(elem_classes="adapter-card", elem_id=f"adapter-card-{name}"):
            with gr.Row(elem_classes="card-head"):  # the picture, then the controls beside it (wrapping on a phone)
                if a.get("thumbnail"):
                    gr.Image(a["thumbnail"], show_label=False, container=False, interactive=False, buttons=[],
                             height=THUMB_PX, width=THUMB_PX, scale=0, min_width=THUMB_PX,
                             elem_classes=["thumbnail", "pixelated"], alt_text=f"what {name} draws")  # fmt: skip
                with gr.Column(scale=1, min_width=0), gr.Row():
                    on = gr.Checkbox(value=active, label=name, interactive=True, scale=1, min_width=120,
                                     elem_classes="active")  # fmt: skip
                    w = gr.Slider(WEIGHT_MIN, WEIGHT_MAX, value=weight, step=WEIGHT_STEP, label="weight",
                                  interactive=True, scale=3, min_width=180, elem_classes="weight")  # fmt: skip
                    if a.get("shared"):
                        shared_tag()
                    else:
                        delete = gr.Button("Delete", variant="stop", size="sm", scale=0, min_width=80)
            gr.Markdown(facts_markdown(a), elem_classes="facts")
            about = [line for line in (description(a["repo_id"], a["revision"]), report_line(a.get("report", {})))
                     if line]  # fmt: skip
            if about:
                gr.Markdown("  \n".join(about), elem_classes="facts about")
        for control in (on, w):
            control.change(None, [ticks, on, w], ticks, js=_set_tick_js(name), **PRIVATE)
        if delete is not None:
            on_delete(name, delete)
