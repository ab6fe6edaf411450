"""Caps and the checks of user input.

Each check raises `InputError` with the bad value and the valid range, and returns the normalised value,
so callers validate everything first and only then touch the model.
"""

import math
import re
from functools import cache

from peft_core.errors import InputError

# Adapter weights outside this range mostly produce saturated noise; negative weights are allowed because
# "subtracting" a style is a common and useful trick.
WEIGHT_MIN, WEIGHT_MAX = -2.0, 2.0
STEPS_MIN, STEPS_MAX = 1, 100
GUIDANCE_MIN, GUIDANCE_MAX = 0.0, 30.0
# Images: diffusers pipelines need sizes divisible by 8 (the VAE's downsampling).
SIZE_MIN, SIZE_MAX, SIZE_MULTIPLE = 8, 1024, 8
PROMPT_MAX_CHARS = 2000
SEED_MIN, SEED_MAX = 0, 2**32 - 1
# Adapter names become keys of torch ModuleDicts: a "." would be read as a submodule path.
ADAPTER_NAME_MAX = 64
ADAPTER_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
# Names the libraries use for their own attributes or defaults; an adapter called "lora_A" or "base_layer"
# would shadow module attributes inside peft's layers.
RESERVED_ADAPTER_NAMES = frozenset(
    {
        "base_layer",
        "lora_A",
        "lora_B",
        "lora_embedding_A",
        "lora_embedding_B",
        "lora_magnitude_vector",
        "lora_dropout",
        "weight",
        "bias",
        "default",
        "all",
        "none",
    }
)


def check_number(name: str, value, lo: float, hi: float) -> float:
    """A finite float in [lo, hi]."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too big for a float (JSON allows it)
        raise InputError(f"{name} must be a number in [{lo}, {hi}], got {value!r}") from None
    if not math.isfinite(number) or not lo <= number <= hi:
        raise InputError(f"{name} must be a finite number in [{lo}, {hi}], got {value!r}")
    return number


def check_int(name: str, value, lo: int, hi: int) -> int:
    """An integer in [lo, hi]; floats with a fractional part are refused rather than silently truncated."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise InputError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
        value = int(value)
    if not isinstance(value, int) or not lo <= value <= hi:
        raise InputError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def check_weight(adapter_name: str, weight) -> float:
    return check_number(f"weight of adapter {adapter_name!r}", weight, WEIGHT_MIN, WEIGHT_MAX)


def check_size(name: str, value) -> int:
    size = check_int(name, value, SIZE_MIN, SIZE_MAX)
    if size % SIZE_MULTIPLE:
        raise InputError(f"{name} must be a multiple of {SIZE_MULTIPLE} in [{SIZE_MIN}, {SIZE_MAX}], got {size}")
    return size


def check_prompt(name: str, value, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise InputError(f"{name} must be text, got {type(value).__name__}")
    if len(value) > PROMPT_MAX_CHARS:
        raise InputError(f"{name} is {len(value):,} characters long; at most {PROMPT_MAX_CHARS:,} are allowed")
    if not allow_empty and not value.strip():
        raise InputError(f"{name} must not be empty")
    return value


def check_adapter_name(value) -> str:
    """A name that is safe as a module key in peft, diffusers and transformers."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"adapter_name must be a non-empty name, got {value!r}")
    name = value.strip()
    shown = name if len(name) <= 80 else name[:77] + "..."
    if len(name) > ADAPTER_NAME_MAX:
        raise InputError(f"adapter_name {shown!r} is {len(name)} characters; at most {ADAPTER_NAME_MAX} are allowed")
    if not ADAPTER_NAME_RE.match(name):
        raise InputError(
            f"adapter_name {shown!r} is not valid: use letters, digits, '_' or '-', starting with a letter or '_' "
            "(a '.' or '/' would break module names)"
        )
    if name in RESERVED_ADAPTER_NAMES:
        raise InputError(
            f"adapter_name {name!r} is reserved by the libraries; choose another (reserved: "
            f"{', '.join(sorted(RESERVED_ADAPTER_NAMES))})"
        )
    if name in torch_attribute_names():
        raise InputError(f"adapter_name {name!r} is the name of a torch module method or attribute; choose another")
    return name


@cache
def torch_attribute_names() -> frozenset[str]:
    """Names peft cannot use for an adapter: it keeps adapters in torch ModuleDicts and ParameterDicts, where an
    adapter called "half", "keys" or "to" would collide with a method, and one called "training" or "_modules" with
    an attribute every instance sets in __init__ (so dir() of instances, not of the classes)."""
    import torch

    return frozenset(dir(torch.nn.ModuleDict())) | frozenset(dir(torch.nn.ParameterDict()))


def derive_adapter_name(repo_id: str, taken) -> str:
    """A valid adapter name from a repo id ("ostris/super-cereal-sdxl-lora" -> "super_cereal_sdxl_lora").

    Adds "_2", "_3" ... when the name is already taken, so loading the same repo twice keeps both.
    """
    base = re.sub(r"[^A-Za-z0-9_]+", "_", repo_id.rsplit("/", 1)[-1]).strip("_").lower()
    if base and base[0].isdigit():
        base = "a_" + base
    base = base[: ADAPTER_NAME_MAX - 4]
    if not base or base in RESERVED_ADAPTER_NAMES:
        raise InputError(f"cannot derive an adapter name from {repo_id!r}; please give adapter_name")
    name, n = base, 2
    while name in taken or name in torch_attribute_names():
        name, n = f"{base}_{n}", n + 1
    return name


def check_loaded(names, resident) -> None:
    """Every name in `names` is a resident adapter (`resident`: the studio's adapters by name)."""
    missing = ", ".join(repr(name) for name in names if name not in resident)
    if missing:
        raise InputError(f"adapter(s) {missing} not loaded; loaded: {', '.join(resident) or 'none'}")


def check_free(adapter_name: str, resident) -> None:
    """`adapter_name` is not taken by a resident adapter."""
    if adapter_name in resident:
        raise InputError(f"adapter_name {adapter_name!r} is already loaded; choose another name or delete it first")
