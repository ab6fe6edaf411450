"""The libraries' private attributes the studio reads (peft_core/private.py), checked against the installed
libraries: each test fails the day diffusers, transformers or peft rename or drop one, naming the function."""

import copy
import inspect

import diffusers
import pytest
from peft import LoraConfig

from peft_core import private
from peft_core.image import families


@pytest.mark.parametrize("cls", sorted(c for f in families.FAMILIES.values() for c in f.classes))
def test_lora_loadable_modules_names_pipeline_parts_including_the_denoiser(cls):
    pipeline_class = getattr(diffusers, cls)
    parts = private.lora_loadable_modules(pipeline_class.__new__(pipeline_class))
    components = set(inspect.signature(pipeline_class.__init__).parameters)
    assert parts and all(isinstance(p, str) and p in components for p in parts), parts
    assert {"unet", "transformer"} & set(parts)


def test_lora_loadable_modules_covers_every_part_diffusers_puts_a_lora_in(studio, assets):
    studio.load_adapter(str(assets["lora_a"]), adapter_name="a")
    pipe = studio.pipe
    assert private.lora_loadable_modules(pipe) == ["unet", "text_encoder"]  # SD's, text encoder included
    assert set(pipe.get_list_adapters()) <= set(private.lora_loadable_modules(pipe))  # diffusers' public view


def _adapted(model, targets):
    model = copy.deepcopy(model)
    model.add_adapter(LoraConfig(r=2, target_modules=targets), adapter_name="x")
    return model


def _state(model) -> tuple:
    return hasattr(model, "peft_config"), getattr(model, "_hf_peft_config_loaded", "absent")


@pytest.mark.parametrize("part, targets, delete", [("unet", ["to_q"], "delete_adapters"),
                                                    ("text_encoder", ["q_proj"], "delete_adapter")])  # fmt: skip
def test_forget_peft_config_leaves_the_model_as_the_librarys_own_delete(studio, part, targets, delete):
    """diffusers' models (delete_adapters) and transformers' (delete_adapter): the same state after the last
    adapter goes, the flag reads as the libraries read it, and a new adapter goes in as on a fresh model."""
    import warnings

    from peft.tuners.tuners_utils import BaseTunerLayer

    base = getattr(studio.pipe, part)
    theirs, ours = _adapted(base, targets), _adapted(base, targets)
    assert private.peft_config_loaded(ours) and not private.peft_config_loaded(base)
    getattr(theirs, delete)("x")
    with warnings.catch_warnings():  # peft: "Adapter x was active which is now deleted"
        warnings.simplefilter("ignore", UserWarning)
        for layer in ours.modules():
            if isinstance(layer, BaseTunerLayer):
                layer.delete_adapter("x")
    ours.peft_config.pop("x")
    private.forget_peft_config(ours)
    assert _state(ours) == _state(theirs) == (False, theirs._hf_peft_config_loaded)
    assert not private.peft_config_loaded(ours)
    ours.add_adapter(LoraConfig(r=2, target_modules=targets), adapter_name="y")
    assert set(ours.peft_config) == {"y"}


def test_without_forget_peft_config_the_next_adapter_fails(studio):
    """Why the flag must be reset with the config: left set, the libraries look for a config that is gone."""
    model = _adapted(studio.pipe.unet, ["to_q"])
    del model.peft_config
    with pytest.raises(AttributeError, match="peft_config"):
        model.add_adapter(LoraConfig(r=2, target_modules=["to_q"]), adapter_name="y")
