"""The checked read of an adapter's safetensors file, shared by the image and the text side.

A stranger's file is read in three steps, each refusing what the next would trust:

1. `check_safetensors_header`: the header is checked entry by entry before safetensors maps the file: key names
   are plain module paths, dtypes come from an allowlist, shapes and offsets agree with the file's size.
2. `read_tensors`: safetensors' own loader (never unpickles), its errors turned into AdapterError.
3. `check_finite`: every floating-point tensor is free of NaN and infinity.

`read_checked` runs all three for a caller that has no header checks of its own (the text side); the image side
checks LoRA shapes on the header between steps 1 and 2 (image/lora_files.py).
"""

import json
import string
import struct
from pathlib import Path

from peft_core.errors import AdapterError, shown

# Header bigger than this is not an adapter (safetensors itself caps headers at 100 MB).
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
MAX_TENSOR_DIMS = 8  # conv LoRAs are 4-D; nothing an adapter holds has more


def read_checked(path: Path, what: str) -> dict:
    """The file's tensors, after the header check, refusing an empty file, and the finite check.

    Args:
        what: names the file in errors, e.g. "'me/lora: adapter_model.safetensors'".
    """
    if not check_safetensors_header(path):
        raise AdapterError(f"{what} holds no tensors")
    tensors = read_tensors(path, what)
    check_finite(tensors, what)
    return tensors


def read_tensors(path: Path, what: str) -> dict:
    """Load a file whose header `check_safetensors_header` has passed; never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except SafetensorError as exc:
        raise AdapterError(f"{what} could not be read as safetensors: {exc}") from None


def check_finite(tensors: dict, what: str) -> None:
    """Refuse NaN or infinity in any floating-point tensor (integer ones cannot hold them)."""
    import torch

    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise AdapterError(f"{what} has NaN or infinite values in {key!r}; the file is broken")


def check_safetensors_header(path: Path) -> dict[str, dict]:
    """Refuse empty, truncated, lying or malformed files before safetensors maps them.

    Returns the tensor entries ({key: {"dtype": "F32", "shape": [4, 320], "data_offsets": [0, 5120]}}), each
    checked: a plain key name, a dtype from SAFETENSORS_DTYPES, a shape of non-negative ints and offsets inside the
    file that hold exactly dtype x shape bytes.
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
        raise AdapterError(f"{name!r} is corrupt: its header names {shown(exc.args[0])} twice") from None
    if not isinstance(header, dict):
        raise AdapterError(f"{name!r} is not a safetensors file: its header is not a JSON object")
    return header


class _DuplicateKey(Exception):
    pass




def _check_key(name: str, key: str) -> None:
    if not key or len(key) > MAX_KEY_CHARS or not set(key) <= KEY_CHARS:
        raise AdapterError(
            f"{name!r} has a tensor named {shown(key)}; tensor names must be module paths of 1 to {MAX_KEY_CHARS} "
            "letters, digits, '_' and '.' (like 'unet.mid_block.attentions.0.proj_in.lora_A.weight')"
        )


def _check_entry(name: str, key: str, info, data_len: int) -> None:
    """One header entry: {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}, consistent with the file."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise AdapterError(
            f"{name!r} is corrupt: tensor {key!r} must be described by dtype, shape and data_offsets, got "
            f"{shown(info)}"
        )
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in SAFETENSORS_DTYPES:
        raise AdapterError(
            f"{name!r}: tensor {key!r} has dtype {shown(dtype)}; adapter weights must be one of "
            f"{', '.join(SAFETENSORS_DTYPES)}"
        )
    if not (
        isinstance(shape, list)
        and len(shape) <= MAX_TENSOR_DIMS
        and all(type(n) is int and n >= 0 for n in shape)  # noqa: E721 - bool is an int subclass, and not a size
    ):
        raise AdapterError(
            f"{name!r} is corrupt: tensor {key!r} has shape {shown(shape)}; a shape is a list of at most "
            f"{MAX_TENSOR_DIMS} non-negative integers"
        )
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)):  # noqa: E721
        raise AdapterError(
            f"{name!r} is corrupt: tensor {key!r} has data_offsets {shown(offsets)}; they must be two integers "
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
