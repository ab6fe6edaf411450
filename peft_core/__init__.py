"""peft_core: the logic behind Adapter Studio.

It owns the diffusion pipeline, the causal LM, their adapters, Hub resolution and the input rules.
It never imports gradio: `app.py` turns the errors raised here into messages for the page and the API.
Heavy libraries (torch, diffusers, transformers) are imported lazily so importing this package is cheap.
Each side is a package (start at its studio.py); what both share sits here:

- image/            the diffusers pipeline, its LoRAs and the mix per request (image/__init__.py lists its files)
- text/             the causal LM, its peft adapters, training and merging (text/__init__.py lists its files)
- pool.py           AdapterPool: the resident adapters, each session's names for them, eviction, the base checks
- sessions.py       whose call this is, per-session quotas (a Quotas handed to the studios), the end of a session
- turns.py          the lock served in arrival order, handed over between denoising steps or tokens
- startup.py        a studio's defaults loaded in the background, calls waiting for them
- hub.py            repo ids, revisions, weight_name, downloads through huggingface_hub, download progress
- bundled.py        the Hub-style repos in assets/hub/, read offline
- settings.py       every environment variable, read once into one frozen Settings
- limits.py         caps and the checks of user input (the page imports its ranges)
- errors.py         StudioError and its kinds; a refusal names the bad value and changes nothing
- runtime.py        device and dtype, and quieting the libraries' load-time chatter
- config_checks.py  allowlists for the config files of strangers' repos (adapter_config.json, config.json)
- safetensors_file.py  the checked read of an adapter's safetensors file, for both sides
- presets.py        one click to a base, its adapters and a prompt
- private.py        the libraries' private attributes the studio reads, one function each, with why
"""

from peft_core.errors import AdapterError, HubError, InputError, StudioError

__all__ = ["AdapterError", "HubError", "InputError", "StudioError"]
