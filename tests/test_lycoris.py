"""LyCORIS files (LoHa, LoKr) on the image side, through peft's tuners: they load with the file's rank, alpha and
targets, stay resident, mix with LoRAs at any weight, fuse (each member merged with its weight) and disable exactly;
algorithms peft lacks and files for another family are refused, leaving everything as it was.
"""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from peft_core.errors import AdapterError, InputError
from tests.conftest import gen
from tests.layout_keys import ATTENTION, KOHYA_LOCON, PROJECTIONS, loha, lokr, target_modules

pytestmark = pytest.mark.usefixtures("one_thread")
Q = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"


def _write(folder, state):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "lycoris.safetensors")
    return str(folder)


@pytest.fixture
def files(studio, tmp_path, monkeypatch):
    """{name: folder} of LyCORIS files for the tiny SD pipeline, and the studio allowed to read them."""
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{studio.info.model_id}:{tmp_path}")
    unet = studio.pipe.unet
    attention = target_modules(unet, ATTENTION, children=PROJECTIONS)
    locon = target_modules(unet, KOHYA_LOCON, conv3x3=True)
    return {
        "loha": _write(tmp_path / "loha", loha(unet, locon, seed=1)),  # linear and 3x3 convolutions
        "loha_no_alpha": _write(tmp_path / "loha-no-alpha", loha(unet, attention, seed=2, alpha=None)),
        "lokr": _write(tmp_path / "lokr", lokr(unet, attention, seed=3)),
        # LyCORIS' wrapper (lycoris/wrapper.py, LORA_PREFIX "lycoris"; SimpleTuner's LyCORIS training): diffusers names
        "lokr_wrapper": _write(tmp_path / "lokr-wrapper", lokr(unet, attention, seed=5, prefix="lycoris")),
        "glora": _write(
            tmp_path / "glora",
            {f"lora_unet_{Q.replace('.', '_')}.{k}.weight": torch.ones(2, 8) for k in ("a1", "a2", "b1", "b2")},
        ),  # fmt: skip
        "loha_other_family": _write(tmp_path / "xl", _wider(loha(unet, attention, seed=4))),
    }


def _wider(state):
    """The same LoHa with its cross-attention key/value factors taking 2048 wide text (an SDXL file's)."""
    return {k: torch.randn(v.shape[0], 2048) if "attn2_to_k" in k and k.endswith("hada_w1_b") else v
            for k, v in state.items()}  # fmt: skip


def _lycoris_delta(path, module: str) -> torch.Tensor:
    """LyCORIS' own formulas (lycoris/modules/loha.py, lokr.py): (w1a w1b) * (w2a w2b) * alpha / rank for LoHa,
    kron(w1, w2) * scale for LoKr; the oracle the merged weights are checked against."""
    from safetensors.torch import load_file

    keys = (f"lora_unet_{module}", f"lycoris_{module}")
    t = {k.rpartition(".")[2]: v for k, v in load_file(path).items() if k.partition(".")[0] in keys}
    if "hada_w1_a" in t:
        rank = t["hada_w1_b"].shape[0]
        scale = float(t["alpha"]) / rank if "alpha" in t else 1.0
        return (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"]) * scale
    w2 = t["lokr_w2"] if "lokr_w2" in t else t["lokr_w2_a"] @ t["lokr_w2_b"]
    scale = 1.0 if "lokr_w2" in t else float(t["alpha"]) / t["lokr_w2_b"].shape[0]
    return torch.kron(t["lokr_w1"], w2) * scale


@pytest.mark.parametrize(
    "name, algorithm", [("loha", "LoHa"), ("loha_no_alpha", "LoHa"), ("lokr", "LoKr"), ("lokr_wrapper", "LoKr")]
)
def test_lycoris_loads_through_peft_and_fuses_with_its_weight(studio, files, name, algorithm):
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = gen(studio)
    weight = studio.pipe.unet.get_submodule(Q).weight.detach().clone()
    info = studio.load_adapter(files[name], adapter_name="ly")[0]
    report = info["report"]
    assert report["algorithm"] == algorithm and info["layout"] == f"lycoris-{algorithm.lower()}"
    assert report["matched"] == report["named"] and report["unmatched"] == []
    if name == "loha_no_alpha":
        assert report["alpha"].startswith("no alpha keys: alpha = rank")
    layer = studio.pipe.unet.get_submodule(Q)
    assert isinstance(layer, BaseTunerLayer) and type(layer).__module__.startswith(f"peft.tuners.{name[:4]}")
    image = gen(studio, {"ly": 0.7})
    assert not np.array_equal(image, base)
    assert studio.slots.fused  # merged into the base weights by peft, at weight 0.7:
    delta = _lycoris_delta(f"{files[name]}/lycoris.safetensors", Q.replace(".", "_"))
    torch.testing.assert_close(layer.get_base_layer().weight.detach(), weight + 0.7 * delta, rtol=1e-5, atol=1e-5)
    assert np.array_equal(gen(studio, {"ly": 0.7}, use_adapters=False), base)  # disabled: the base, bit for bit
    assert torch.equal(layer.get_base_layer().weight, weight)
    assert not np.array_equal(gen(studio, {"ly": 1.0}), image)


def test_lora_and_loha_mix_each_with_its_weight(studio, files, allow_assets, monkeypatch, tmp_path):
    """A LoRA and a LoHa on the same layers: the mix differs from each alone, each weight counts, the same request
    gives the same bits after others ran (each member merged slot by slot), and disabling gives the base."""
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{allow_assets['root']}:{tmp_path}")
    base = gen(studio)
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    studio.load_adapter(files["loha"], adapter_name="h")
    a, h, mix = gen(studio, {"a": 1.0}), gen(studio, {"h": 1.0}), gen(studio, {"a": 1.0, "h": 0.5})
    assert not np.array_equal(mix, a) and not np.array_equal(mix, h) and not np.array_equal(a, h)
    assert not np.array_equal(gen(studio, {"a": 1.0, "h": 1.0}), mix)
    studio.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")  # takes a slot: the others move
    gen(studio, {"b": 1.0, "h": 0.3})
    assert np.array_equal(gen(studio, {"a": 1.0, "h": 0.5}), mix)
    assert np.array_equal(gen(studio, {"a": 1.0, "h": 0.5}, use_adapters=False), base)
    assert np.array_equal(gen(studio, {"h": 1.0}), h)


def test_unsupported_algorithm_is_refused_naming_it(studio, files, allow_assets, monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{allow_assets['root']}:{tmp_path}")
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    before = studio.list_adapters(), gen(studio, {"a": 1.0})
    with pytest.raises(AdapterError, match=r"is a GLoRA adapter \(keys such as .*\); peft has no tuner for it"):
        studio.load_adapter(files["glora"], adapter_name="g")
    assert studio.list_adapters() == before[0] and np.array_equal(gen(studio, {"a": 1.0}), before[1])


def test_lycoris_for_another_family_is_refused_naming_both(studio, files, allow_assets, monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{allow_assets['root']}:{tmp_path}")
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    before = studio.list_adapters(), gen(studio, {"a": 1.0})
    with pytest.raises(AdapterError, match=r"was made for SDXL \(cross-attention 2048\); the loaded base .* is "
                       r"StableDiffusionPipeline \(cross-attention 32\)"):  # fmt: skip
        studio.load_adapter(files["loha_other_family"], adapter_name="xl")
    assert studio.list_adapters() == before[0] and np.array_equal(gen(studio, {"a": 1.0}), before[1])


def test_export_of_a_mix_with_a_lycoris_member_is_refused_with_the_reason(
    studio, files, allow_assets, monkeypatch, tmp_path
):
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{allow_assets['root']}:{tmp_path}")
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    studio.load_adapter(files["lokr"], adapter_name="k")
    with pytest.raises(InputError, match=r"'k' is a LoKr adapter; a mix exports as one LoRA file"):
        studio.export_mix({"a": 1.0, "k": 0.5}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make", [loha, lokr], ids=["loha", "lokr"])
def test_lycoris_on_sdxl_in_kohya_sgm_names(tmp_path, monkeypatch, make):
    """A LoHa / LoKr trained with kohya's SDXL trainer (sgm block names, lora_te1_ / lora_te2_) on the tiny SDXL
    pipeline: every layer registered, per component; it changes the image, mixes with a LoRA, and disables exactly."""
    from peft_core.image import pipeline
    from peft_core.image.studio import ImageStudio
    from tests.layout_keys import CLIP_ATTENTION, KOHYA_UNET, sgm_name
    from tiny_models.families import build_tiny_family, family_lora_state_dict

    monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(tmp_path))
    pipe = build_tiny_family("sdxl", tmp_path / "sdxl")
    unet_modules = target_modules(pipe.unet, KOHYA_UNET)
    te = target_modules(pipe.text_encoder, CLIP_ATTENTION)
    te2 = target_modules(pipe.text_encoder_2, CLIP_ATTENTION)
    state = make(pipe.unet, unet_modules, seed=1, spell=sgm_name(pipe.unet))
    state |= make(pipe.text_encoder, te, seed=2, prefix="lora_te1") | make(pipe.text_encoder_2, te2, seed=3,
                                                                           prefix="lora_te2")  # fmt: skip
    studio = ImageStudio(device="cpu")
    studio.load_base(str(tmp_path / "sdxl"))
    base = gen(studio)
    info = studio.load_adapter(_write(tmp_path / "ly", state), adapter_name="h")[0]
    assert info["report"]["algorithm"] == make.__name__.replace("loha", "LoHa").replace("lokr", "LoKr")
    named = {"text_encoder": len(te), "text_encoder_2": len(te2), "unet": len(unet_modules)}
    assert info["report"]["named"] == info["report"]["matched"] == named
    registered = pipeline.registered_modules(studio.pipe, studio.slots.slot_of("h"))
    assert sorted(registered["unet"]) == sorted(unet_modules)
    _write(tmp_path / "lora", family_lora_state_dict(pipe, "sdxl", seed=4))
    studio.load_adapter(str(tmp_path / "lora"), adapter_name="a")
    h, a, mix = gen(studio, {"h": 1.0}), gen(studio, {"a": 1.0}), gen(studio, {"h": 0.5, "a": 1.0})
    assert not np.array_equal(h, base) and not np.array_equal(mix, a) and not np.array_equal(mix, h)
    assert np.array_equal(gen(studio, {"h": 0.5, "a": 1.0}, use_adapters=False), base)
