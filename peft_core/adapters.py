"""Adapter facts and the checks of LoRA files, before anything touches the pipeline.

A LoRA file is read once here: its safetensors header is checked (truncated files and headers that claim
more than the file holds are refused), every tensor must be finite, and its key layout is recognised:

- peft / diffusers: `unet.<module>.lora_A.weight`                      (what diffusers saves today)
- kohya / A1111:    `lora_unet_<module>.lora_down.weight` + `.alpha`    (most community LoRAs)
- old diffusers:    `unet.<module>.lora.down.weight`                    (diffusers 0.14-0.20 LoRACompatibleLinear)
- attn processors:  `unet.<...>.processor.to_k_lora.down.weight`        (diffusers' training scripts up to ~0.20)
- old text encoder: `text_encoder.<module>.lora_linear_layer.down.weight`

diffusers 0.42 converts all of these itself; what it does not do is fail loudly when keys match nothing or only
part of the model: the call returns and the output does not change. So the file's own count of LoRA layers is
kept here and compared with what was registered after the load (see images.py).
"""

import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from peft_core.errors import AdapterError

# Header bigger than this is not a LoRA (safetensors itself caps headers at 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024
# One marker per LoRA layer: the "down" (A) matrix, in each layout's spelling.
_DOWN_MARKERS = (".lora_A.", ".lora_down.", ".lora.down.", "_lora.down.", ".lora_linear_layer.down.")
_LYCORIS_MARKERS = ("hada_w1", "hada_w2", "lokr_w1", "lokr_w2", ".oft_", "lora_mid")
_KOHYA_COMPONENTS = {
    "lora_unet_": "unet",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
    "lora_te_": "text_encoder",
}


@dataclass
class LoraFile:
    """A checked LoRA file: its tensors and what they say about the adapter."""

    state_dict: dict = field(repr=False)
    layout: str  # one of the layouts in the module docstring
    rank: int  # the largest rank among its layers (most files use one rank throughout)
    components: list[str]  # pipeline parts it touches, e.g. ["unet", "text_encoder"]
    num_layers: int  # LoRA layers the file names; compared with what the pipeline registers
    size_mb: float


@dataclass
class AdapterInfo:
    """One resident adapter, as listed to users and API clients."""

    adapter_name: str
    repo_id: str
    weight_name: str
    revision: str
    rank: int
    components: list[str]
    size_mb: float
    trigger_words: list[str]
    layout: str
    num_layers: int

    def to_dict(self) -> dict:
        return asdict(self)


def check_safetensors_header(path: Path) -> None:
    """Refuse empty, truncated or lying files before safetensors maps them."""
    size = path.stat().st_size
    name = path.name
    if size < 8:
        raise AdapterError(f"{name!r} is not a safetensors file: it is {size} bytes long (empty or truncated)")
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > MAX_HEADER_BYTES or header_len > size - 8:
            raise AdapterError(
                f"{name!r} is corrupt: its header claims {header_len:,} bytes but the file has {size:,} bytes"
            )
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise AdapterError(f"{name!r} is not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise AdapterError(f"{name!r} is not a safetensors file: its header is not a JSON object")
    data_len = size - 8 - header_len
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1] <= data_len):
            raise AdapterError(
                f"{name!r} is truncated or corrupt: tensor {key!r} lies outside the file's {data_len:,} data bytes"
            )


def detect_layout(keys: list[str]) -> str:
    """Name the key layout of a LoRA state dict, or refuse one that is not a LoRA."""
    if any(marker in k for k in keys for marker in _LYCORIS_MARKERS):
        raise AdapterError(
            "this file is a LyCORIS adapter (LoHa / LoKr / OFT keys such as 'hada_w1_a'), not a LoRA; "
            "only LoRA files can be loaded into the pipeline"
        )
    lora_keys = [k for k in keys if "lora" in k]
    if not lora_keys:
        example = ", ".join(repr(k) for k in keys[:2])
        raise AdapterError(
            f"this file holds no LoRA weights (keys such as {example}); it looks like a full model's weights. "
            "Load it as a base pipeline instead, or pick the LoRA file of the repo"
        )
    if any(k.startswith(tuple(_KOHYA_COMPONENTS)) for k in lora_keys):
        return "kohya"
    if any(".processor." in k and "_lora." in k for k in lora_keys):
        return "attn-procs"
    if any(".lora_linear_layer." in k for k in lora_keys):
        return "old-text-encoder"
    if any(".lora.down." in k or ".lora.up." in k for k in lora_keys):
        return "old-diffusers"
    if any(".lora_A." in k or ".lora_B." in k for k in lora_keys):
        return "peft"
    raise AdapterError(f"unrecognised LoRA key layout (for example {lora_keys[0]!r})")


def _component(key: str) -> str:
    for prefix, component in _KOHYA_COMPONENTS.items():
        if key.startswith(prefix):
            return component
    return key.split(".", 1)[0]


def read_lora_file(path: Path) -> LoraFile:
    """Load and check a LoRA safetensors file; never unpickles."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_safetensors_header(path)
    try:
        state_dict = load_file(path)
    except SafetensorError as exc:
        raise AdapterError(f"{path.name!r} could not be read as safetensors: {exc}") from None
    if not state_dict:
        raise AdapterError(f"{path.name!r} holds no tensors")
    layout = detect_layout(list(state_dict))
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise AdapterError(f"{path.name!r} has NaN or infinite values in {key!r}; the file is broken")
    downs = {k: v for k, v in state_dict.items() if any(m in k for m in _DOWN_MARKERS)}
    if not downs:
        raise AdapterError(f"{path.name!r} has LoRA keys but no down/A matrices; the file is incomplete")
    return LoraFile(
        state_dict=state_dict,
        layout=layout,
        rank=max(int(v.shape[0]) for v in downs.values()),
        components=sorted({_component(k) for k in downs}),
        num_layers=len(downs),
        size_mb=round(path.stat().st_size / 2**20, 3),
    )


def trigger_words(card_data: dict) -> list[str]:
    """Trigger words from a model card, in the fields the common trainers write them to."""
    words: list[str] = []
    for key in ("instance_prompt", "trigger_words", "trigger_word", "activation_text", "trigger"):
        value = card_data.get(key)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            words += [w.strip() for w in value if isinstance(w, str) and w.strip()]
    return list(dict.fromkeys(words))
