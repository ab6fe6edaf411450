"""Why a LoRA file's layers did not land: the reasons a refusal gives, read from the file and the loaded base.

When the file's keys point to another family than the base's (lora_report.made_for: a cross-attention width, FLUX's
double/single blocks, SD3's joint blocks, a second text encoder), the refusal names both families. When they point
to the base's family, or say nothing, it names what did not match and why, module by module:

- a pipeline part the base lacks ("names layers of text_encoder_2, which this SD 1.x pipeline does not have");
- a block past the base's depth ("names single_transformer_blocks.12 but this FLUX has 2");
- a module the base has under no such name ("names down_blocks.0.attentions.0.transformer_blocks.0.attn9, but
  ...transformer_blocks.0 has no attn9");
- a module of a type a LoRA cannot wrap ("names ....norm1, which is a LayerNorm here").

A file's module names are walked through the model's own children, in the file's spelling (kohya's "_" for "."), so
nothing here is a pattern; names in spellings the studio maps elsewhere (sgm blocks, BFL's FLUX names) are left to
the counts in the report.
"""

from peft_core.image import families

MAX_REASONS = 5
# Spellings mapped to diffusers' modules by diffusers or the studio (sgm blocks, BFL's FLUX blocks): not walked.
_MAPPED = ("input_blocks_", "middle_block_", "output_blocks_", "double_blocks_", "single_blocks_", "joint_blocks_")
_KINDS = {"FLUX": "FluxTransformer2DModel", "SD3": "SD3Transformer2DModel"}


def family_mismatch(made_for: str, pipe) -> bool:
    """Whether the family the file's keys point to (`made_for`, lora_report's words) is not the base's."""
    if not made_for:
        return False
    for word, transformer in _KINDS.items():
        if made_for.startswith(word):
            return type(getattr(pipe, "transformer", None)).__name__ != transformer
    if made_for.startswith("SDXL (two text encoders)"):
        return getattr(pipe, "text_encoder_2", None) is None
    unet = getattr(pipe, "unet", None)
    width = getattr(getattr(unet, "config", None), "cross_attention_dim", None)
    if "(cross-attention " in made_for:
        return unet is None or f"(cross-attention {width})" not in made_for
    return False


def reasons(pipe, parts: dict, named: dict, modules: dict, registered: dict) -> list[str]:
    """What of a file did not match `pipe`, when its family is the base's: up to MAX_REASONS sentences, one per
    place in the model where the file's names leave it.

    Args:
        parts: component -> model, the parts of `pipe` a LoRA can go in (pipeline.lora_components).
        named: component -> layers the file names (LoadReport.named); modules: component -> {flat module name:
            key} (LoraFile.modules); registered: component -> module names that carry the adapter.
    """
    label = families.family_of(type(pipe).__name__).label
    found: list[str] = []
    for component in named:
        if component not in parts and not (component == "unet" and "transformer" in parts):
            found.append(f"it names layers of {component}, which this {label} pipeline does not have "
                         f"(its parts: {', '.join(parts)})")  # fmt: skip
    places: dict[tuple, list] = {}  # (where the name leaves the model, what) -> [count, before, after]
    for component, names in modules.items():
        model = parts.get(component) or (parts.get("transformer") if component == "unet" else None)
        if model is None:
            continue
        landed = {n.replace(".", "_") for n in registered.get(component, ())}
        for flat in names:
            if flat in landed or flat.startswith(_MAPPED):
                continue
            place = _walk(model, flat, label)
            if place is not None:
                places.setdefault(place[0], [0, *place[1:]])[0] += 1
    found += [before + (_layers(n) if after is not None else "") + (after or "") for n, before, after in
              places.values()]  # fmt: skip
    return found[:MAX_REASONS]


def _walk(model, flat: str, label: str):
    """Follow `flat` (a module name with "_" for ".") through the model's children: (where it leaves them, the
    sentence before and after the count of the file's layers leaving there (after None: no count)), or None when
    it names a module a LoRA can wrap."""
    import torch

    if not hasattr(model, "text_model") and flat.startswith("text_model_"):
        flat = flat.removeprefix("text_model_")  # transformers 5's CLIPTextModel dropped that level
    node, path, rest = model, [], flat
    while rest:
        children = dict(node.named_children())
        match = next((n for n in sorted(children, key=len, reverse=True) if rest == n or rest.startswith(f"{n}_")),
                     None)  # fmt: skip
        if match is None:
            head = rest.split("_", 1)[0]
            where = ".".join(path)
            if isinstance(node, torch.nn.ModuleList) and head.isdigit():
                return (where, head), f"it names {where}.{head} but this {label} has {len(node)}", None
            under = f" under {where or 'the model'} that it has no module for (such as {rest[:60]})"
            return (where,), "it names ", under
        path.append(match)
        node, rest = children[match], rest[len(match) + 1 :]
    base = node.get_base_layer() if hasattr(node, "get_base_layer") else node
    wraps = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Embedding)
    if not isinstance(base, wraps):
        kind = type(base).__name__
        return (kind,), "it names ", f" that are {kind} here, such as {'.'.join(path)} (a LoRA wraps Linear and Conv)"
    return None


def _layers(n: int) -> str:
    return f"{n} layer" if n == 1 else f"{n} layers"
