"""Admin settings for a public Space, read from the environment at each use so tests and admins can change them.

| env var                      | default | what it does                                                        |
|------------------------------|---------|---------------------------------------------------------------------|
| STUDIO_LOCAL_DIRS            | empty   | folders (os.pathsep-separated) whose sub-folders may be loaded by path |
| STUDIO_ALLOWED_ORGS          | empty   | comma-separated Hub orgs/users to allow; empty allows every id       |
| STUDIO_LOCK_BASE             | 0       | 1: the base model loaded at start cannot be replaced                 |
| STUDIO_MAX_ADAPTER_MB        | 2048    | largest LoRA file accepted, checked before the download              |
| STUDIO_MAX_MODEL_MB          | 32768   | largest base model (sum of its files), checked before the download   |
| STUDIO_MAX_RESIDENT_ADAPTERS | 32      | adapters kept loaded; past it the least recently used one goes       |
"""

import os
from dataclasses import dataclass
from pathlib import Path

from peft_core.errors import InputError


@dataclass(frozen=True)
class Settings:
    local_dirs: tuple[Path, ...]
    allowed_orgs: frozenset[str]  # empty: every org
    lock_base: bool
    max_adapter_mb: float
    max_model_mb: float  # a pipeline or LM: the files its snapshot would fetch, added up
    max_resident_adapters: int


def _number(name: str, default: str, cast):
    value = os.environ.get(name, default)
    try:
        number = cast(value)
    except ValueError:
        raise InputError(f"admin setting {name}={value!r} is not a number") from None
    if number <= 0:
        raise InputError(f"admin setting {name}={value!r} must be positive")
    return number


def current() -> Settings:
    dirs = os.environ.get("STUDIO_LOCAL_DIRS", "")
    orgs = os.environ.get("STUDIO_ALLOWED_ORGS", "")
    return Settings(
        local_dirs=tuple(Path(p).expanduser().resolve() for p in dirs.split(os.pathsep) if p.strip()),
        allowed_orgs=frozenset(o.strip() for o in orgs.split(",") if o.strip()),
        lock_base=os.environ.get("STUDIO_LOCK_BASE", "0").strip().lower() in ("1", "true", "yes"),
        max_adapter_mb=_number("STUDIO_MAX_ADAPTER_MB", "2048", float),
        max_model_mb=_number("STUDIO_MAX_MODEL_MB", "32768", float),
        max_resident_adapters=_number("STUDIO_MAX_RESIDENT_ADAPTERS", "32", int),
    )
