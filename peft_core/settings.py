"""Admin settings for a public Space: every environment variable the studio reads, read here only, once, into one
frozen `Settings` (`current()`).

The settings do not change while the app runs. A test or a tool that changes a variable in a running process calls
`reload()` afterwards (tests/conftest.py's `monkeypatch` does it on every setenv and delenv); the next `current()`
reads the environment again. A bad value is refused, naming it, by the `current()` that reads it.

| env var                      | default | what it does                                                        |
|------------------------------|---------|---------------------------------------------------------------------|
| STUDIO_LOCAL_DIRS            | empty   | folders (os.pathsep-separated) whose sub-folders may be loaded by path |
| STUDIO_ALLOWED_ORGS          | empty   | comma-separated Hub orgs/users to allow; empty allows every id       |
| STUDIO_LOCK_BASE             | 0       | 1: the base model loaded at start cannot be replaced                 |
| STUDIO_MAX_ADAPTER_MB        | 2048    | largest LoRA file accepted, checked before the download              |
| STUDIO_MAX_MODEL_MB          | 32768   | largest base model (sum of its files), checked before the download   |
| STUDIO_MAX_RESIDENT_ADAPTERS | 32      | adapters kept loaded; past it the least recently used one goes       |
| STUDIO_LORA_SLOTS            | 4 *     | adapters in the pipeline at once (rest in RAM); * CUDA: 4-16 by memory |
| STUDIO_FUSE                  | 1       | 0: never merge the mix into the base weights (see fusion.py)         |
| STUDIO_FUSE_MAX_MB           | 4096 *  | fuse only while the adapted layers' base weights fit; * CUDA: 1/4 of it |
| STUDIO_COMPILE               | 0       | 1: torch.compile the denoiser once per base (see image/compile.py)   |
| STUDIO_MAX_IMAGE_COST        | 2 / 4   | one image's work at most, in the pipeline's default images (CPU / GPU) |
| STUDIO_DTYPE                 | auto    | float32, float16 or bfloat16 for every pipeline; auto: by family     |
| STUDIO_OFFLOAD               | none    | on CUDA: model or group (diffusers' CPU offload), see image/families |
| STUDIO_PUBLIC                | auto    | 1: visitors cannot replace the base (on by itself on a Space: SPACE_ID) |
| STUDIO_BASES                 | empty   | comma-separated bases the admin may switch to in public mode; empty: any |
| STUDIO_SESSION_MAX_ADAPTERS  | 8       | adapters one session may hold (loaded, added, merged)                |
| STUDIO_SESSION_MAX_MB        | 1024    | megabytes of adapters one session may hold                           |
| STUDIO_SESSION_DOWNLOADS_PER_MINUTE | 6 | adapter loads that may download, per session and minute           |
| STUDIO_SESSION_TRAIN_STEPS   | 2000    | training steps one session may run in all                            |
| STUDIO_SESSION_IDLE_S        | 3600    | a session unseen this long has its adapters released                 |
| STUDIO_THUMBNAILS            | auto    | card pictures: auto (widget, else made once where cheap), hub, off   |
| STUDIO_DEVICE                | auto    | the studios' device: cuda when torch sees a GPU, else cpu            |
| STUDIO_DEFAULT_PIPELINE      | bundled | the image pipeline app.py loads at start (bundled.BUNDLED_PIPELINE)  |
| STUDIO_DEFAULT_TEXT_MODEL    | bundled | the causal LM app.py loads at start (bundled.BUNDLED_TEXT_MODEL)     |
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from peft_core import bundled
from peft_core.errors import InputError


@dataclass(frozen=True)
class Settings:
    local_dirs: tuple[Path, ...]
    allowed_orgs: frozenset[str]  # empty: every org
    lock_base: bool
    max_adapter_mb: float
    max_model_mb: float  # a pipeline or LM: the files its snapshot would fetch, added up
    max_resident_adapters: int
    lora_slots: int  # see slots.py: more slots, fewer refills, but every generation walks them all
    fuse: bool
    fuse_max_mb: float  # fusing keeps a copy of the adapted base weights, for an exact unfuse
    compile: bool  # off by default: compiling takes minutes on a CPU and pays on a GPU (image/compile.py)
    # One image's work at most, counted in the pipeline's default images (limits.image_cost): it bounds how long one
    # visitor's request can keep the others waiting. A GPU gets more: its default image takes seconds, not minutes.
    max_image_cost: float
    dtype: str  # "auto": float32 on a CPU, the family's dtype on CUDA (peft_core/image/families.py)
    offload: str  # what waits in CPU memory between uses on CUDA: "none", "model" (each part) or "group" (blocks)
    # Public mode (docs/SESSIONS.md): visitors use the base the admin chose; locally anyone may replace it.
    public: bool
    bases: tuple[str, ...]  # the admin's allowed bases in public mode; empty: any
    session_max_adapters: int
    session_max_mb: float
    session_downloads_per_minute: int
    session_train_steps: int
    session_idle_s: float
    # The image cards' pictures (image/thumbnails.py): "auto" the card's widget image, else one made at load on a GPU
    # or a small pipeline; "hub" widget images only; "off" none.
    thumbnails: str
    device: str  # where a studio built without a device runs (runtime.pick_device): "cuda", "cuda:1", "cpu" ...
    default_pipeline: str  # what app.py loads at start; the bundled demo adapters come only with the bundled one
    default_text_model: str


def _number(env: Mapping[str, str], name: str, default: str, cast, zero_ok=False):
    value = env.get(name, default)
    try:
        number = cast(value)
    except ValueError:
        raise InputError(f"admin setting {name}={value!r} is not a number") from None
    if number < 0 or (number == 0 and not zero_ok):
        raise InputError(f"admin setting {name}={value!r} must be {'0 or more' if zero_ok else 'positive'}")
    return number


DTYPES = ("auto", "float32", "float16", "bfloat16")
OFFLOADS = ("none", "model", "group")
THUMBNAIL_MODES = ("auto", "hub", "off")
# The prompt of a generated thumbnail when the card has neither a widget text nor trigger words; also the page's
# first prompt (the bundled default draws shapes).
DEFAULT_PROMPT = "a red circle"


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower() or default
    if value not in choices:
        raise InputError(f"admin setting {name}={value!r} must be one of {', '.join(choices)}")
    return value


# On a GPU the fusion copies (fusion.py) live in its memory beside the pipeline: a FLUX.1 LoRA's adapted weights alone
# are ~3.6 GB in bfloat16, so the budget grows with the device, at this share of it (never below the CPU's 4096 MB).
FUSE_GPU_SHARE = 0.25


# The slots (slots.py) hold the adapters in use in the pipeline, on the GPU: more slots, fewer refills when many
# visitors mix their own adapters (a refill copies an adapter from RAM into the device). A slot is budgeted at
# SLOT_GPU_MB, a large adapter (a FLUX.1 LoRA of rank 64 on every linear layer of the transformer is ~0.7 GB in
# bfloat16), and the slots together at SLOTS_GPU_SHARE of the device; never below the CPU's 4, and never above
# SLOTS_MAX: every generation and switch walks the slots' layers (64 injected adapters made a generation up to 1.5x as
# long, docs/BENCHMARKS.md): 16, a quarter of those, bounds that cost whatever the device.
SLOTS_GPU_SHARE = 0.125
SLOT_GPU_MB = 1024
SLOTS_MIN, SLOTS_MAX = 4, 16


def _device(env: Mapping[str, str]) -> str:
    """STUDIO_DEVICE, else "cuda" when torch sees a GPU, else "cpu"."""
    if env.get("STUDIO_DEVICE", "").strip():
        return env["STUDIO_DEVICE"].strip()
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _gpu_total_mb(device: str) -> float | None:
    """The memory of `device` in MB when it is a CUDA device; None on a CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**20


def _default_fuse_mb(env: Mapping[str, str], device: str) -> str:
    total_mb = None if "STUDIO_FUSE_MAX_MB" in env else _gpu_total_mb(device)
    if total_mb is None:
        return "4096"
    return str(max(4096, int(total_mb * FUSE_GPU_SHARE)))


def _default_lora_slots(env: Mapping[str, str], device: str) -> str:
    total_mb = None if "STUDIO_LORA_SLOTS" in env else _gpu_total_mb(device)
    if total_mb is None:
        return str(SLOTS_MIN)
    return str(min(SLOTS_MAX, max(SLOTS_MIN, int(total_mb * SLOTS_GPU_SHARE / SLOT_GPU_MB))))


def read(env: Mapping[str, str] | None = None) -> Settings:
    """The settings in `env` (the process's environment by default), checked; raises InputError naming a bad one."""
    env = os.environ if env is None else env
    dirs = env.get("STUDIO_LOCAL_DIRS", "")
    orgs = env.get("STUDIO_ALLOWED_ORGS", "")
    device = _device(env)
    return Settings(
        local_dirs=tuple(Path(p).expanduser().resolve() for p in dirs.split(os.pathsep) if p.strip()),
        allowed_orgs=frozenset(o.strip() for o in orgs.split(",") if o.strip()),
        lock_base=env.get("STUDIO_LOCK_BASE", "0").strip().lower() in ("1", "true", "yes"),
        max_adapter_mb=_number(env, "STUDIO_MAX_ADAPTER_MB", "2048", float),
        max_model_mb=_number(env, "STUDIO_MAX_MODEL_MB", "32768", float),
        max_resident_adapters=_number(env, "STUDIO_MAX_RESIDENT_ADAPTERS", "32", int),
        lora_slots=_number(env, "STUDIO_LORA_SLOTS", _default_lora_slots(env, device), int),
        fuse=env.get("STUDIO_FUSE", "1").strip().lower() not in ("0", "false", "no"),
        fuse_max_mb=_number(env, "STUDIO_FUSE_MAX_MB", _default_fuse_mb(env, device), float, zero_ok=True),
        compile=env.get("STUDIO_COMPILE", "0").strip().lower() in ("1", "true", "yes"),
        max_image_cost=_number(env, "STUDIO_MAX_IMAGE_COST", "4" if device != "cpu" else "2", float),
        dtype=_choice(env, "STUDIO_DTYPE", "auto", DTYPES),
        offload=_choice(env, "STUDIO_OFFLOAD", "none", OFFLOADS),
        public=_public(env),
        bases=tuple(b.strip() for b in env.get("STUDIO_BASES", "").split(",") if b.strip()),
        session_max_adapters=_number(env, "STUDIO_SESSION_MAX_ADAPTERS", "8", int),
        session_max_mb=_number(env, "STUDIO_SESSION_MAX_MB", "1024", float),
        session_downloads_per_minute=_number(env, "STUDIO_SESSION_DOWNLOADS_PER_MINUTE", "6", int),
        session_train_steps=_number(env, "STUDIO_SESSION_TRAIN_STEPS", "2000", int),
        session_idle_s=_number(env, "STUDIO_SESSION_IDLE_S", "3600", float),
        thumbnails=_choice(env, "STUDIO_THUMBNAILS", "auto", THUMBNAIL_MODES),
        device=device,
        default_pipeline=env.get("STUDIO_DEFAULT_PIPELINE", "").strip() or bundled.BUNDLED_PIPELINE,
        default_text_model=env.get("STUDIO_DEFAULT_TEXT_MODEL", "").strip() or bundled.BUNDLED_TEXT_MODEL,
    )


def _public(env: Mapping[str, str]) -> bool:
    """STUDIO_PUBLIC=1/0 when set; else on when running on a Hugging Face Space (which sets SPACE_ID)."""
    value = env.get("STUDIO_PUBLIC", "").strip().lower()
    if value:
        return value in ("1", "true", "yes")
    return bool(env.get("SPACE_ID"))


_current: Settings | None = None  # read at the first current(), dropped by reload()


def current() -> Settings:
    """The settings: read from the environment at the first call, the same object at every call after."""
    global _current
    if _current is None:
        _current = read()  # a bad value raises here, and again at the next call: nothing is kept of it
    return _current


def reload() -> None:
    """Forget the settings read so far: the next current() reads the environment again. For tests and tools that
    change STUDIO_* variables in a running process (tests/conftest.py, bench/common.py, scripts/soak.py); the app
    itself never changes them."""
    global _current
    _current = None
