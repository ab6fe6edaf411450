"""Device and dtype choice, and quieting the libraries' load-time chatter."""

import contextlib

from peft_core import settings


def pick_device(device: str | None = None):
    """(device, dtype): `STUDIO_DEVICE` or CUDA when present, else CPU; float16 on CUDA, float32 on CPU.

    float32 on CPU also for bases stored in float16 on the Hub: CPU half-precision kernels are slow or missing.
    """
    import torch

    device = device or default_device()
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    return device, dtype


def default_device() -> str:
    """`STUDIO_DEVICE`, else "cuda" when torch sees a GPU, else "cpu" (read once, in settings.py)."""
    return settings.current().device


@contextlib.contextmanager
def quiet_libraries():
    """Silence load-time chatter that misleads users: transformers' report tables list LoRA-wrapped base weights
    as 'MISSING', and diffusers/peft warn about the other resident adapters' keys on every load."""
    import warnings

    import diffusers
    import transformers

    levels = transformers.logging.get_verbosity(), diffusers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    diffusers.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="peft")
            yield
    finally:
        transformers.logging.set_verbosity(levels[0])
        diffusers.logging.set_verbosity(levels[1])
