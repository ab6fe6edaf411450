"""LyCORIS networks trained with a conv dimension (LoCon-style LoRA, LoHa, LoKr; plain and Tucker) on SD 1.x and
SDXL, keyed by LyCORIS' own naming code with the shapes its modules make for 1x1 and 3x3 convolutions
(tests/layout_keys.py `lycoris_layer`): every module the file names is registered, per component; the image changes,
mixes with a plain LoRA, fuses within the fused tolerance (merged weights = LyCORIS' formulas) and disables bit for
bit. A Tucker LoCon (`lora_mid`), which peft's LoRA cannot hold, is refused by name, leaving everything as it was.
"""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from peft_core.errors import AdapterError
from peft_core.image import pipeline
from tests.conftest import family_studio, gen
from tests.layout_keys import (
    LYCORIS_TE,
    LYCORIS_UNET,
    LYCORIS_UNET_NAMES,
    LYCORIS_WRAPPER,
    lycoris_delta,
    lycoris_network,
    lycoris_sgm_name,
    lycoris_targets,
)

pytestmark = pytest.mark.usefixtures("one_thread")
FUSED_TOLERANCE = 2  # as tests/test_slots.py: a fused image differs from an unfused one by rounding only
# (algorithm, use_tucker, layout the studio reports, peft tuner module)
NETWORKS = {
    "locon": ("locon", False, "kohya", "lora"),
    "loha": ("loha", False, "lycoris-loha", "loha"),
    "loha-tucker": ("loha", True, "lycoris-loha", "loha"),
    "lokr": ("lokr", False, "lycoris-lokr", "lokr"),
    "lokr-tucker": ("lokr", True, "lycoris-lokr", "lokr"),
}


def _write(folder, state):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "lycoris.safetensors")
    return str(folder)


def _file(pipe, algo, tucker, sdxl: bool, seed: int = 1, wrapper: bool = False):
    """{component: module names} and the state dict of a LyCORIS network over every module LyCORIS' kohya network
    wraps in the UNet and the text encoder(s), or (`wrapper`) its wrapper in the UNet alone."""
    if wrapper:
        unet = lycoris_targets(pipe.unet, LYCORIS_WRAPPER)
        return {"unet": unet}, lycoris_network(algo, pipe.unet, unet, seed, prefix="lycoris", tucker=tucker)
    unet = lycoris_targets(pipe.unet, LYCORIS_UNET, () if sdxl else LYCORIS_UNET_NAMES)
    targets = {"unet": unet}
    spell = lycoris_sgm_name(pipe.unet) if sdxl else None
    state = lycoris_network(algo, pipe.unet, unet, seed, tucker=tucker, spell=spell)
    encoders = [("text_encoder", "lora_te")]
    if sdxl:
        encoders = [("text_encoder", "lora_te1"), ("text_encoder_2", "lora_te2")]
    for i, (component, prefix) in enumerate(encoders):
        model = getattr(pipe, component)
        targets[component] = lycoris_targets(model, LYCORIS_TE)
        state |= lycoris_network(algo, model, targets[component], seed + 1 + i, prefix=prefix, tucker=tucker)
    return targets, state


def _check_network(studio, pipe, tmp_path, net, sdxl, lora_folder, wrapper=False):
    from peft.tuners.tuners_utils import BaseTunerLayer

    algo, tucker, layout, tuner = NETWORKS[net]
    targets, state = _file(pipe, algo, tucker, sdxl, wrapper=wrapper)
    kinds = {m.rsplit(".", 1)[-1] for m in targets["unet"]} | {m.split(".")[2] for m in targets["unet"] if
                                                              m.count(".") > 2}  # fmt: skip
    assert {"conv1", "conv2", "conv_shortcut", "time_emb_proj", "downsamplers", "upsamplers"} <= kinds
    assert sdxl or {"conv_in", "conv_out", "linear_1"} <= kinds
    convs = [m for m in targets["unet"] if isinstance(pipe.unet.get_submodule(m), torch.nn.Conv2d)]
    assert any(pipe.unet.get_submodule(m).kernel_size == (3, 3) for m in convs)
    assert any(pipe.unet.get_submodule(m).kernel_size == (1, 1) for m in convs)
    base = gen(studio)
    info = studio.load_adapter(_write(tmp_path / net, state), adapter_name="ly")[0]
    report = info["report"]
    assert info["layout"] == layout
    assert report["named"] == report["matched"] == {c: len(m) for c, m in sorted(targets.items())}
    assert info["num_layers"] == len({k.partition(".")[0] for k in state})  # every module the file names
    registered = pipeline.registered_modules(studio.pipe, studio.slots.slot_of("ly"))
    assert sorted(registered["unet"]) == sorted(targets["unet"])
    # a 3x3 and a 1x1 convolution, in peft's tuner, merged with the weight into the base as LyCORIS computes them
    checked = [next(m for m in convs if pipe.unet.get_submodule(m).kernel_size == size) for size in ((3, 3), (1, 1))]
    spell = lycoris_sgm_name(pipe.unet) if sdxl else (lambda n: n)
    before = {m: studio.pipe.unet.get_submodule(m).get_base_layer().weight.detach().clone() for m in checked}
    image = gen(studio, {"ly": 0.7})
    assert not np.array_equal(image, base)
    assert studio.slots.fused
    for module in checked:
        layer = studio.pipe.unet.get_submodule(module)
        assert isinstance(layer, BaseTunerLayer) and type(layer).__module__.startswith(f"peft.tuners.{tuner}")
        key = f"{'lycoris' if wrapper else 'lora_unet'}_{spell(module).replace('.', '_')}"
        tensors = {k.partition(".")[2]: v for k, v in state.items() if k.partition(".")[0] == key}
        delta = lycoris_delta(tensors, before[module].shape)
        torch.testing.assert_close(layer.get_base_layer().weight.detach(), before[module] + 0.7 * delta,
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
    studio.slots.fuse = False
    try:
        assert np.abs(gen(studio, {"ly": 0.7}) - image).max() <= FUSED_TOLERANCE
    finally:
        studio.slots.fuse = True
    studio.load_adapter(lora_folder, adapter_name="a")
    a, mix = gen(studio, {"a": 1.0}), gen(studio, {"ly": 0.7, "a": 1.0})
    assert not np.array_equal(mix, a) and not np.array_equal(mix, image)
    assert np.array_equal(gen(studio, {"ly": 0.7, "a": 1.0}, use_adapters=False), base)  # disabled: the base
    assert np.array_equal(gen(studio, {"ly": 0.7}), image)


@pytest.fixture(scope="module")
def sd_pipe(assets):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(assets["pipeline"])


@pytest.mark.parametrize("net", list(NETWORKS))
def test_lycoris_with_convolutions_on_sd(studio, sd_pipe, allow_assets, tmp_path, monkeypatch, net):
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{allow_assets['root']}:{tmp_path}")
    _check_network(studio, sd_pipe, tmp_path, net, False, str(allow_assets["lora_a"]))


@pytest.mark.parametrize("net", ["loha-tucker", "lokr"])
def test_lycoris_wrapper_with_convolutions_on_sd(studio, sd_pipe, allow_assets, tmp_path, monkeypatch, net):
    """LyCORIS' wrapper (SimpleTuner) on the UNet: every Linear and Conv, `lycoris_` + diffusers' names."""
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{allow_assets['root']}:{tmp_path}")
    _check_network(studio, sd_pipe, tmp_path, net, False, str(allow_assets["lora_a"]), wrapper=True)


@pytest.fixture(scope="module")
def sdxl(tiny_family):
    return tiny_family("sdxl")


@pytest.mark.parametrize("net", list(NETWORKS))
def test_lycoris_with_convolutions_on_sdxl_in_kohya_sgm_names(sdxl, tmp_path, monkeypatch, net):
    from diffusers import DiffusionPipeline

    from tiny_models.families import family_lora_state_dict

    studio = family_studio(sdxl, monkeypatch, tmp_path)
    other = DiffusionPipeline.from_pretrained(sdxl[0] / "pipeline")  # family_lora_state_dict wraps its layers
    lora = _write(tmp_path / "lora", family_lora_state_dict(other, "sdxl", seed=4))
    _check_network(studio, sdxl[1], tmp_path, net, True, lora)


def test_tucker_locon_is_refused_by_name(studio, sd_pipe, allow_assets, tmp_path, monkeypatch):
    """peft's LoRA has no Tucker core: LyCORIS' `lora_mid` is named in the refusal; nothing resident changes."""
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{allow_assets['root']}:{tmp_path}")
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    before = studio.list_adapters(), gen(studio, {"a": 1.0})
    _, state = _file(sd_pipe, "locon", True, False)
    assert any(k.endswith(".lora_mid.weight") for k in state)
    with pytest.raises(AdapterError, match=r"is a LoCon with Tucker decomposition \(lora_mid\) adapter"):
        studio.load_adapter(_write(tmp_path / "tucker", state), adapter_name="t")
    assert studio.list_adapters() == before[0] and np.array_equal(gen(studio, {"a": 1.0}), before[1])


def test_lokr_for_another_family_is_refused_naming_both(studio, sd_pipe, allow_assets, tmp_path, monkeypatch):
    """A LoKr's cross-attention width is its factors' c x d (it has no whole-input factor, as LoHa's hada_w1_b):
    one whose attn2 to_k takes 64 wide text (the tiny SDXL's) on the 32 wide tiny SD is refused naming both."""
    from tests.layout_keys import lycoris_layer

    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{allow_assets['root']}:{tmp_path}")
    targets, state = _file(sd_pipe, "lokr", False, False)
    module = next(m for m in targets["unet"] if m.endswith("attn2.to_k"))
    to_k, out = f"lora_unet_{module.replace('.', '_')}", sd_pipe.unet.get_submodule(module).out_features
    state = {k: v for k, v in state.items() if not k.startswith(f"{to_k}.")}
    state |= lycoris_layer("lokr", to_k, torch.nn.Linear(64, out), rank=4, alpha=2.0)
    with pytest.raises(AdapterError, match=r"was made for a UNet \(cross-attention 64\); the loaded base .* is "
                       r"StableDiffusionPipeline \(cross-attention 32\)"):  # fmt: skip
        studio.load_adapter(_write(tmp_path / "wide", state), adapter_name="wide")
    assert studio.list_adapters() == []
