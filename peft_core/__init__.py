"""peft_core: the logic behind Adapter Studio.

It owns the diffusion pipeline, the causal LM, their adapters, Hub resolution and the input rules.
It never imports gradio: `app.py` turns the errors raised here into messages for the page and the API.
Heavy libraries (torch, diffusers, transformers) are imported lazily so importing this package is cheap.
"""

from peft_core.errors import AdapterError, HubError, InputError, StudioError

__all__ = ["AdapterError", "HubError", "InputError", "StudioError"]
