"""Adapter facts and the checks of LoRA files, before anything touches the pipeline.

A LoRA file is read once here. Its safetensors header is checked entry by entry before a tensor is read: key
names are plain module paths (diffusers turns them into LoraConfig fields that peft matches as regular
expressions), dtypes come from an allowlist, shapes and offsets agree with the file, down/up matrices are 2-D or
4-D with one rank per pair. Then every tensor must be finite, and the key layout is recognised:

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
import string
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from peft_core.errors import AdapterError

# Header bigger than this is not a LoRA (safetensors itself caps headers at 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024
# Real LoRA files hold hundreds to a few thousand tensors (SDXL with both text encoders and kohya alphas: ~2,200).
MAX_TENSORS = 20_000
# Module paths of real models stay under ~150 characters.
MAX_KEY_CHARS = 256
# Key names become module names in the LoraConfig diffusers builds (target_modules, rank_pattern, alpha_pattern),
# which peft matches as regular expressions: a key made of these characters can never be a pattern that backtracks.
KEY_CHARS = frozenset(string.ascii_letters + string.digits + "_.")
# safetensors dtype -> bytes per element: the float types adapters are saved in and the integer types real files
# carry. float8 and the 4/6-bit types are left out: torch cannot check them for NaN and LoRA layers cannot use them.
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}
MAX_TENSOR_DIMS = 8  # conv LoRAs are 4-D; nothing a LoRA holds has more
# Trigger words are listed with every adapter on every /list_adapters answer and added to prompts: a few short ones.
MAX_TRIGGER_WORDS = 10
MAX_TRIGGER_WORD_CHARS = 120
# One marker per LoRA layer: the "down" (A) matrix, in each layout's spelling, and its "up" (B) twin.
_DOWN_UP = {
    ".lora_A.": ".lora_B.",
    ".lora_down.": ".lora_up.",
    ".lora.down.": ".lora.up.",
    "_lora.down.": "_lora.up.",
    ".lora_linear_layer.down.": ".lora_linear_layer.up.",
}
_DOWN_MARKERS = tuple(_DOWN_UP)
_UP_MARKERS = tuple(_DOWN_UP.values())
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


def check_safetensors_header(path: Path) -> dict[str, dict]:
    """Refuse empty, truncated, lying or malformed files before safetensors maps them.

    Returns the tensor entries ({key: {"dtype": "F32", "shape": [4, 320], "data_offsets": [0, 5120]}}), each
    checked: a plain key name, a dtype from SAFETENSORS_DTYPES, a shape of non-negative ints and offsets inside the
    file that hold exactly dtype x shape bytes. The text side reads its adapter files through this too.
    """
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
        raw = f.read(header_len)
    header = _parse_header(name, raw)
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise AdapterError(f"{name!r} is corrupt: its __metadata__ must map names to text (safetensors' format)")
    if len(header) > MAX_TENSORS:
        raise AdapterError(f"{name!r} holds {len(header):,} tensors; an adapter file holds at most {MAX_TENSORS:,}")
    data_len = size - 8 - header_len
    for key, info in header.items():
        _check_key(name, key)
        _check_entry(name, key, info, data_len)
    return header


def _parse_header(name: str, raw: bytes) -> dict:
    """The header's JSON object. Python's decoder recurses once per nesting level: a header nested thousands deep
    is refused here (RecursionError), and every level below the entries is refused by _check_entry."""

    def no_duplicates(pairs):
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            duplicate = next(key for key in keys if keys.count(key) > 1)
            raise _DuplicateKey(duplicate)
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AdapterError(f"{name!r} is not a safetensors file: its header is not JSON") from None
    except RecursionError:
        raise AdapterError(
            f"{name!r} is not a safetensors file: its header nests too deep (a header is one object of tensor "
            "entries, each {dtype, shape, data_offsets})"
        ) from None
    except _DuplicateKey as exc:
        raise AdapterError(f"{name!r} is corrupt: its header names {_shown(exc.args[0])} twice") from None
    if not isinstance(header, dict):
        raise AdapterError(f"{name!r} is not a safetensors file: its header is not a JSON object")
    return header


class _DuplicateKey(Exception):
    pass


def _shown(value, limit: int = 80) -> str:
    """repr(value), cut to about `limit` characters (a stranger's value can be megabytes)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[: limit - 3] + "...")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_key(name: str, key: str) -> None:
    if not key or len(key) > MAX_KEY_CHARS or not set(key) <= KEY_CHARS:
        raise AdapterError(
            f"{name!r} has a tensor named {_shown(key)}; tensor names must be module paths of 1 to {MAX_KEY_CHARS} "
            "letters, digits, '_' and '.' (like 'unet.mid_block.attentions.0.proj_in.lora_A.weight')"
        )


def _check_entry(name: str, key: str, info, data_len: int) -> None:
    """One header entry: {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}, consistent with the file."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise AdapterError(
            f"{name!r} is corrupt: tensor {key!r} must be described by dtype, shape and data_offsets, got "
            f"{_shown(info)}"
        )
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in SAFETENSORS_DTYPES:
        raise AdapterError(
            f"{name!r}: tensor {key!r} has dtype {_shown(dtype)}; adapter weights must be one of "
            f"{', '.join(SAFETENSORS_DTYPES)}"
        )
    if not (
        isinstance(shape, list)
        and len(shape) <= MAX_TENSOR_DIMS
        and all(type(n) is int and n >= 0 for n in shape)  # noqa: E721 - bool is an int subclass, and not a size
    ):
        raise AdapterError(
            f"{name!r} is corrupt: tensor {key!r} has shape {_shown(shape)}; a shape is a list of at most "
            f"{MAX_TENSOR_DIMS} non-negative integers"
        )
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)):  # noqa: E721
        raise AdapterError(
            f"{name!r} is corrupt: tensor {key!r} has data_offsets {_shown(offsets)}; they must be two integers "
            "[begin, end]"
        )
    if not 0 <= offsets[0] <= offsets[1] <= data_len:
        raise AdapterError(
            f"{name!r} is truncated or corrupt: tensor {key!r} lies outside the file's {data_len:,} data bytes"
        )
    nbytes = SAFETENSORS_DTYPES[dtype]
    for n in shape:
        nbytes *= n
    if offsets[1] - offsets[0] != nbytes:
        raise AdapterError(
            f"{name!r} is corrupt: tensor {key!r} ({dtype}, shape {shape}) needs {nbytes:,} bytes but its "
            f"data_offsets span {offsets[1] - offsets[0]:,}"
        )


def _check_lora_shapes(name: str, header: dict[str, dict]) -> None:
    """LoRA down/up matrices are 2-D (linear) or 4-D (conv) with every size >= 1 and one rank per pair; `alpha`
    entries are single numbers. Checked on the header, before a tensor is read."""
    for key, info in header.items():
        shape = info["shape"]
        if key.endswith(".alpha"):
            if len(shape) > 1 or (shape and shape[0] != 1) or not info["dtype"].startswith(("F", "BF")):
                raise AdapterError(
                    f"{name!r}: {key!r} has shape {shape} ({info['dtype']}); an alpha is one float (shape [] or [1])"
                )
        elif key.endswith(".weight") and any(m in key for m in _DOWN_MARKERS + _UP_MARKERS):
            if len(shape) not in (2, 4) or min(shape) < 1:
                raise AdapterError(
                    f"{name!r}: {key!r} has shape {shape}; a LoRA down/up matrix is 2-D (linear) or 4-D (conv) with "
                    "every size at least 1"
                )
    for key, info in header.items():
        marker = next((m for m in _DOWN_MARKERS if m in key), None)
        if marker is None or not key.endswith(".weight"):
            continue
        up = header.get(key.replace(marker, _DOWN_UP[marker]))
        if up is not None and up["shape"][1] != info["shape"][0]:
            raise AdapterError(
                f"{name!r}: {key!r} has rank {info['shape'][0]} but its up matrix has rank {up['shape'][1]}; the two "
                "halves of a LoRA layer share one rank"
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
    """Load and check a LoRA safetensors file; never unpickles.

    Every key, dtype and shape is checked on the header, before a tensor is read. The file's `__metadata__` is not
    used: diffusers would read `lora_adapter_metadata` there as a LoraConfig (init_lora_weights, target_modules ...
    from a stranger) when given the path, but it is given the tensors only, and builds its config from the key names
    checked here (see images.py).
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    header = check_safetensors_header(path)
    if not header:
        raise AdapterError(f"{path.name!r} holds no tensors")
    layout = detect_layout(list(header))
    _check_lora_shapes(path.name, header)
    try:
        state_dict = load_file(path)
    except SafetensorError as exc:
        raise AdapterError(f"{path.name!r} could not be read as safetensors: {exc}") from None
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


def check_layer_count(lora: LoraFile, pipe, source: str, model_id: str) -> None:
    """Refuse a file naming more LoRA layers than the pipeline has layers a LoRA can wrap, before it is loaded.

    diffusers turns every layer of a file into LoraConfig entries (target_modules, and rank_pattern where ranks
    differ) that peft matches against every module, one regex per entry: thousands of layers that name nothing
    would hold the pipeline for minutes. With this bound, a hostile file costs no more than a real one.
    """
    import torch

    wrappable = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Embedding)
    capacity = 0
    for component in pipe._lora_loadable_modules:
        model = getattr(pipe, component, None)
        if isinstance(model, torch.nn.Module):
            # a LoRA-wrapped layer counts once, as its base_layer; the adapters' own lora_A / lora_B do not
            capacity += sum(
                isinstance(m, wrappable) and ".lora_" not in f".{name}" for name, m in model.named_modules()
            )
    if lora.num_layers > capacity:
        raise AdapterError(
            f"{source} ({lora.layout} layout) names {lora.num_layers:,} LoRA layers but {model_id!r} has only "
            f"{capacity:,} layers a LoRA can wrap: it was probably made for another base model"
        )


def trigger_words(card_data: dict) -> list[str]:
    """Trigger words from a model card, in the fields the common trainers write them to.

    At most MAX_TRIGGER_WORDS, each printable text of at most MAX_TRIGGER_WORD_CHARS; others are left out (a card
    is a stranger's text, and these words travel with every listing of the adapters).
    """
    words: list[str] = []
    for key in ("instance_prompt", "trigger_words", "trigger_word", "activation_text", "trigger"):
        value = card_data.get(key)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            words += [w.strip() for w in value if isinstance(w, str) and _usable_word(w.strip())]
    return list(dict.fromkeys(words))[:MAX_TRIGGER_WORDS]


def _usable_word(word: str) -> bool:
    return 0 < len(word) <= MAX_TRIGGER_WORD_CHARS and word.isprintable()
