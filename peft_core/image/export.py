"""Export an image mix as ONE LoRA file that reproduces it: the parts concatenated along the rank.

For a layer adapted by LoRAs i with weights w_i and scalings s_i = alpha_i / r_i, the mix adds
sum_i w_i s_i B_i A_i x. Stacking A = [A_1; A_2; ...] (rows) and B = [w_1 s_1 B_1, w_2 s_2 B_2, ...] (columns)
gives B A = sum_i w_i s_i B_i A_i exactly, so a file holding A and B with alpha = rank (scaling 1) is the mix
itself: no SVD, no approximation, at rank r_1 + r_2 + ...
"""

from pathlib import Path

from peft_core.errors import InputError
from peft_core.image.pipeline import lora_components


def mix_state_dict(pipe, mix: dict[str, float]) -> dict:
    """The concatenated LoRA of `mix` (adapter_name -> weight) in diffusers' peft layout (`unet.….lora_A.weight`)."""
    import torch

    state = {}
    for component, model in lora_components(pipe):
        for module_name, module in model.named_modules():
            lora_a = getattr(module, "lora_A", None)
            if lora_a is None:
                continue
            parts = [name for name in mix if name in lora_a and mix[name] != 0]
            if not parts:
                continue
            a = torch.cat([lora_a[name].weight.detach() for name in parts], dim=0)
            b = torch.cat(
                [module.lora_B[name].weight.detach() * (_scaling(module, name) * mix[name]) for name in parts], dim=1
            )
            state[f"{component}.{module_name}.lora_A.weight"] = a.float().cpu().contiguous()
            state[f"{component}.{module_name}.lora_B.weight"] = b.float().cpu().contiguous()
    return state


def _scaling(layer, name: str) -> float:
    """The adapter's own scaling (alpha / r, or alpha / sqrt(r) with rsLoRA), as loaded: `layer.scaling` holds it
    times the weight of the last mix that used the adapter (slots.py sets it with peft's set_scale)."""
    import math

    r = layer.r[name]
    return layer.lora_alpha[name] / (math.sqrt(r) if layer.use_rslora.get(name, False) else r)


def save_mix(pipe, mix: dict[str, float], path: Path, source: str, label: dict | None = None) -> Path:
    """Write the mix (names as the pipeline knows them -> weight) as one safetensors LoRA at `path`; its metadata
    says what it was made from (`label`: the mix as the user named it, when that differs)."""
    from safetensors.torch import save_file

    state = mix_state_dict(pipe, mix)
    if not state:
        raise InputError("the mix is empty (no adapter with a weight other than 0); nothing to export")
    description = ", ".join(f"{name}={weight:g}" for name, weight in (label or mix).items())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, path, metadata={"format": "pt", "adapter_studio_mix": description, "base_model": source})
    return path
