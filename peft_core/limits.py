"""Caps and the checks of user input.

Each check raises `InputError` with the bad value and the valid range, and returns the normalised value,
so callers validate everything first and only then touch the model.
"""

import math
import re
from functools import cache

from peft_core.errors import InputError, shown

# Adapter weights outside this range mostly produce saturated noise; negative weights are allowed because
# "subtracting" a style is a common and useful trick.
WEIGHT_MIN, WEIGHT_MAX = -2.0, 2.0
STEPS_MIN, STEPS_MAX = 1, 100
GUIDANCE_MIN, GUIDANCE_MAX = 0.0, 30.0
# Images: diffusers pipelines need sizes divisible by 8 (the VAE's downsampling).
SIZE_MIN, SIZE_MAX, SIZE_MULTIPLE = 8, 1024, 8
PROMPT_MAX_CHARS = 2000
# One image's work is counted in units of the pipeline's own default request (its default steps at its default
# size), so one rule fits a 32-px test model and SDXL alike; the admin's budget (STUDIO_MAX_IMAGE_COST) is a
# number of such units. Work per step grows faster than the pixels (attention is quadratic in them): measured on
# the bundled UNet, doubling the side (4x the pixels) costs ~12x per step, which 4 ** 1.8 matches.
IMAGE_COST_AREA_EXPONENT = 1.8
SEED_MIN, SEED_MAX = 0, 2**32 - 1
# Thumbnails on the image adapter cards (peft_core/image/thumbnails.py). A widget picture is a stranger's file: its
# size is checked in the repo's listing before it downloads, its declared pixels before it decodes (a 1-KB PNG can
# declare 100,000 x 100,000), and only a THUMBNAIL_PX box of it is kept, re-encoded.
THUMBNAIL_PX = 128
THUMBNAIL_MAX_BYTES = 8 * 2**20
THUMBNAIL_MAX_PIXELS = 4096 * 4096
THUMBNAIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
THUMBNAIL_SEED = 0  # every generated thumbnail: one fixed seed, so it is made once and the same everywhere
THUMBNAIL_WIDGETS_READ = 8  # widget entries looked at in a card
THUMBNAIL_URL_CHARS = 200
# On a CPU, `auto` generates a thumbnail only when the pipeline's default image is this much work at most (pixels x
# steps): the bundled tiny default is 32 x 32 x 20; SD 1.5 is 512 x 512 x 50, minutes on a CPU.
THUMBNAIL_CPU_MAX_WORK = 128 * 128 * 30
# --- the text studio -------------------------------------------------------------------------------------------
MAX_NEW_TOKENS_MIN, MAX_NEW_TOKENS_MAX = 1, 256
# Beyond the max, sampling is uniform noise; below the min, logits / temperature overflow float32 and sampling fails.
TEMPERATURE_MIN, TEMPERATURE_MAX = 0.01, 5.0
RANK_MIN, RANK_MAX = 1, 256  # of an adapter added here (loaded ones: config_checks.ADAPTER_RANK_MAX)
LORA_ALPHA_MAX = 1024.0
TRAIN_STEPS_MIN, TRAIN_STEPS_MAX = 1, 500  # a few hundred steps is what a shared Space can give one request
LEARNING_RATE_MAX = 1.0
TRAIN_TEXT_MAX_CHARS = 20_000
TRAIN_MAX_TOKENS = 4096  # every step sees the whole text: this bounds the cost of one step
# Tokens x steps of one training run: the whole run's cost (500 steps on 400 tokens, or 48 on the longest text).
TRAIN_MAX_TOKEN_STEPS = 200_000

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
    """A finite float in [lo, hi]. Text and booleans are refused: "0.5" or True is a caller's mistake, not a weight."""
    if isinstance(value, (bool, str, bytes)):
        raise InputError(f"{name} must be a number in [{lo}, {hi}], got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too big for a float (JSON allows it)
        raise InputError(f"{name} must be a number in [{lo}, {hi}], got {value!r}") from None
    if not math.isfinite(number) or not lo <= number <= hi:
        raise InputError(f"{name} must be a finite number in [{lo}, {hi}], got {value!r}")
    return number


def parse_number(name: str, text: str, lo: float, hi: float) -> float:
    """A number typed into a text box ("0.5", " -1 "), then checked like check_number."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise InputError(f"{name} must be a number in [{lo}, {hi}], got {text!r}") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InputError(f"{name} must be a finite number in [{lo}, {hi}], got {str(text).strip()!r}")
    return value


def check_positive(name: str, value, hi: float) -> float:
    """A finite number in (0, hi]: a rate, a density or a scale that must not be zero."""
    number = check_number(name, value, 0.0, hi)
    if number <= 0:
        raise InputError(f"{name} must be a number in (0, {hi:g}], got {value!r}")
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


def check_bool(name: str, value) -> bool:
    """True or False only: a JSON client's "false" is a non-empty string, which Python would read as True."""
    if not isinstance(value, bool):
        raise InputError(f"{name} must be true or false, got {type(value).__name__} {value!r}")
    return value


def check_text(name: str, value, max_chars: int = PROMPT_MAX_CHARS) -> str:
    """A string (possibly empty) of at most `max_chars` characters."""
    if not isinstance(value, str):
        raise InputError(f"{name} must be text, got {type(value).__name__} {shown(value)}")
    if len(value) > max_chars:
        raise InputError(f"{name} is {len(value):,} characters long; at most {max_chars:,} are allowed")
    return value


def image_cost(steps: int, width: int, height: int, default: tuple[int, int, int]) -> float:
    """The work of one image in default requests; `default` is the pipeline's (steps, width, height)."""
    default_steps, default_width, default_height = default
    area = (width * height) / (default_width * default_height)
    return steps / default_steps * (area if area <= 1 else area**IMAGE_COST_AREA_EXPONENT)


def check_image_cost(steps: int, width: int, height: int, default: tuple[int, int, int], budget: float) -> None:
    """Refuse an image that would hold the shared pipeline for more than `budget` default requests."""
    cost = image_cost(steps, width, height, default)
    if cost > budget:
        default_steps, default_width, default_height = default
        fits = max((s for s in range(1, steps + 1) if image_cost(s, width, height, default) <= budget), default=0)
        hint = f"at most {fits} steps fit at {width}x{height}" if fits else f"{width}x{height} is too large"
        raise InputError(
            f"{steps} steps at {width}x{height} is {cost:,.1f}x the work of this pipeline's default image "
            f"({default_steps} steps at {default_width}x{default_height}); this Space allows {budget:g}x per image "
            f"(STUDIO_MAX_IMAGE_COST): {hint}"
        )




def check_weight(adapter_name: str, weight) -> float:
    return check_number(f"weight of adapter {adapter_name!r}", weight, WEIGHT_MIN, WEIGHT_MAX)


def check_size(name: str, value, multiple: int = SIZE_MULTIPLE, lo: int = SIZE_MIN, hi: int = SIZE_MAX,
               where: str = "") -> int:  # fmt: skip
    """A width or height; a pipeline family passes its own multiple and range, and its name as `where`."""
    suffix = f" ({where}'s range)" if where else ""
    try:
        size = check_int(name, value, lo, hi)
    except InputError as exc:
        raise InputError(f"{exc}{suffix}") from None
    if size % multiple:
        raise InputError(f"{name} must be a multiple of {multiple} in [{lo}, {hi}], got {size}{suffix}")
    return size


def check_prompt(name: str, value, allow_empty: bool = True) -> str:
    value = check_text(name, value)
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
