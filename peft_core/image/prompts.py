"""Trigger words from model cards, appended to the prompt the way their authors ask."""


def with_trigger_words(prompt: str, adapters: list[dict], mix: dict) -> str:
    """`prompt` plus the trigger words of the adapters active in `mix` (weight ≠ 0) that it does not already
    contain, comma-separated: "a red circle" + ["3D Render"] -> "a red circle, 3D Render"."""
    words = []
    for adapter in adapters:
        if mix.get(adapter["adapter_name"], 0) == 0:
            continue
        for word in adapter.get("trigger_words") or []:
            if word.lower() not in prompt.lower() and word not in words:
                words.append(word)
    return ", ".join([prompt.strip(), *words]) if words and prompt.strip() else (", ".join(words) or prompt)
