"""The libraries' private attributes the studio relies on: one function each, and why no public form serves.

Pinned: diffusers 0.42.1, transformers 5.23.0, peft 0.21.2. tests/test_private.py checks each function against the
installed libraries, so an upgrade that renames or drops one fails there, naming it, instead of deep in a load.
Nothing else in the project reads these attributes.
"""


def lora_loadable_modules(pipe) -> list[str]:
    """The names of the parts of a diffusers pipeline a LoRA can go in, e.g. ["unet", "text_encoder"].

    diffusers keeps the list as `_lora_loadable_modules` on each pipeline's LoRA loader mixin, and its public
    methods (`fuse_lora`, `unload_lora_weights`, `enable_lora_hotswap` ...) walk it, but none returns it:
    `get_list_adapters()` names only the parts that already hold an adapter, and `components` every part,
    the VAE and tokenizers too.
    """
    return list(type(pipe)._lora_loadable_modules)


def forget_peft_config(model) -> None:
    """Put `model` (a diffusers or transformers model whose last adapter is gone from its layers and from its
    `peft_config`) back in the state the libraries' own delete leaves: no `peft_config`, and the flag that says
    one was loaded reset (diffusers' `delete_adapters` sets `_hf_peft_config_loaded` to None, transformers'
    `delete_adapter` to False).

    The studio empties a slot with peft's layer methods on the layers it listed once (slots.py: diffusers'
    `delete_adapters` walks every module of every part twice), and undoes a failed load, which neither library's
    delete accepts (they refuse a name their config does not hold). Both libraries test the flag before they
    trust `peft_config`; left set with the config gone, the next `load_lora_weights` / `add_adapter` fails.
    """
    del model.peft_config
    model._hf_peft_config_loaded = None if type(model).__module__.startswith("diffusers") else False


def peft_config_loaded(model) -> bool:
    """Whether the library that owns `model` counts its `peft_config` as loaded: diffusers and transformers set
    `_hf_peft_config_loaded` when an adapter is first added and test it before they read the config. No public
    property says it; a model of another library (or none loaded yet) reads False."""
    return bool(getattr(model, "_hf_peft_config_loaded", False))
