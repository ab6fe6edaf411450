"""The resident text adapters as cards: a tick (active for this request), the facts, the model card's line, and
for the visitor's own adapters Export and a Delete that asks first.

The ticks live in the browser as a list of names in a hidden JSON component: each card's checkbox writes its own
entry there at once (a JavaScript-only event, no round trip and no race between two quick clicks), and generate,
compare and the snippet read it. The server-side State only says which cards to draw, with the ticks to start them
at. Delete asks inline ("Delete x? [Delete] [Keep]") instead of offering an Undo: an adapter added, trained or
merged here exists nowhere else and could not be loaded back.
"""

import json

import gradio as gr

from ui.common import PRIVATE, next_card_version, shared_tag
from ui.descriptions import description, escape


def kept_ticks(adapters: list[dict], active: list | None) -> list[str]:
    """The ticks the page had (`active`), for the adapters still resident; None (a new base, a first page): the
    first adapter ticked, so that the first generation already shows an effect."""
    names = [a["adapter_name"] for a in adapters]
    if active is None:
        return names[:1]
    return [n for n in active if n in names]


def cards(adapters: list[dict], ticks: list[str]) -> dict:
    """What the cards' State holds: the adapters to draw and the ticks to start them at."""
    return {"adapters": adapters, "ticks": list(ticks), "version": next_card_version()}


def is_own(a: dict) -> bool:
    """The visitor may delete, train and export it (list_adapters gives `shared` to visitors; the admin owns all)."""
    return not a.get("shared", False)


def origin(a: dict) -> str:
    """Where an adapter came from, in words: "repo @ revision", "added here, trained 60 steps", "merged from
    0.5 × a + 0.5 × b (linear)". Escaped: a repo id and the names are the user's (or a stranger's) text."""
    if a.get("source") == "merged":
        parts = " + ".join(f"{float(w):g} × {n}" for n, w in (a.get("merged_from") or {}).items())
        return escape(f"merged from {parts} ({a.get('combination_type')})")
    if a.get("repo_id"):
        return escape(f"{a['repo_id']} @ {a.get('revision') or 'main'}")
    steps = a.get("steps_trained") or 0
    return "added here" + (f", trained {steps} steps" if steps else ", not trained yet")


def facts_markdown(a: dict) -> str:
    """One line of an adapter's facts: where it came from, peft_type, r, lora_alpha, target modules."""
    facts = [origin(a), escape(str(a.get("peft_type")))]
    if a.get("r") is not None:
        facts.append(f"r {a['r']}")
    if a.get("lora_alpha") is not None:
        facts.append(f"lora\\_alpha {float(a['lora_alpha']):g}")
    if a.get("target_modules"):
        facts.append("targets " + escape(", ".join(a["target_modules"])))
    return " · ".join(facts)


def _tick_js(name: str) -> str:
    """The browser-side update of the tick list from one card's checkbox: its name in or out, the rest as it is.
    The list goes out wrapped in another: gradio reads an array a JS event returns as one value per output."""
    n = json.dumps(name)
    return f"(had, on) => {{ const rest = (had || []).filter(x => x !== {n}); return [on ? [...rest, {n}] : rest] }}"


def _ask(asked: bool) -> tuple:
    """(the card's Delete, its "Delete x? [Delete] [Keep]" row): one of the two shows."""
    return gr.update(visible=not asked), gr.update(visible=asked)


def draw_cards(shown: dict, ticks: gr.JSON, on_delete, on_export) -> None:
    """The cards of `shown` (a `cards(...)` value), inside the caller's @gr.render. `on_delete(name, button)` and
    `on_export(name, button)` wire one own card's confirmed Delete and its Export."""
    if not shown["adapters"]:
        gr.Markdown("No adapter yet: load one by repo id above, add one under 'Add a LoRA', or pick a preset.")
    for a in shown["adapters"]:
        name, own = a["adapter_name"], is_own(a)
        with gr.Group(elem_classes="adapter-card", elem_id=f"text-card-{name}"):
            with gr.Row():
                tick = gr.Checkbox(value=name in shown["ticks"], label=name, interactive=True, scale=3,
                                   min_width=120, elem_classes="active")  # fmt: skip
                if not own:  # read-only to this visitor: the pool refuses its delete, train and export
                    shared_tag()
                else:
                    export = gr.Button("Export", size="sm", scale=0, min_width=70, elem_classes="export")
                    ask = gr.Button("Delete", size="sm", scale=0, min_width=70, elem_classes="ask-delete")
            if own:
                with gr.Row(visible=False, elem_classes="confirm-delete") as confirm:
                    gr.Markdown(f"Delete **{escape(name)}**? It was made or loaded in this tab only.", scale=3)
                    sure = gr.Button("Delete", variant="stop", size="sm", scale=0, min_width=70)
                    keep = gr.Button("Keep", size="sm", scale=0, min_width=70)
            gr.Markdown(facts_markdown(a), elem_classes="facts")
            about = description(a["repo_id"], a.get("revision") or "main") if a.get("repo_id") else ""
            if about:
                gr.Markdown(about, elem_classes="facts about")
        tick.change(None, [ticks, tick], ticks, js=_tick_js(name), **PRIVATE)
        if own:
            ask.click(lambda: _ask(True), None, [ask, confirm], show_progress="hidden", **PRIVATE)
            keep.click(lambda: _ask(False), None, [ask, confirm], show_progress="hidden", **PRIVATE)
            on_delete(name, sure)
            on_export(name, export)
