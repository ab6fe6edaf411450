"""UNet LoRAs saved by peft and diffusers themselves, in the three spellings (peft_core/image/peft_files.py): the
`unet.` prefix with diffusers' per-component `lora_adapter_metadata` (`save_lora_weights`), bare module paths with
the LoraConfig unprefixed (`get_peft_model_state_dict(unet)`), and `base_model.model.` beside adapter_config.json
(`PeftModel.save_pretrained`, found automatically or by weight_name). Each is written by the library itself; each
gives the image of the same tensors with alpha / r folded into lora_B, changes the image, mixes with a plain LoRA,
fuses within rounding and disables bit for bit. Config fields beyond the allowlisted scaling ones are never read.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from peft_core.errors import AdapterError
from tests.conftest import family_studio, gen

pytestmark = pytest.mark.usefixtures("one_thread")
FUSED_TOLERANCE = 2
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "conv1"]  # attention, a 1x1 / linear proj, a 3x3 conv
RANK, ALPHA = 4, 2.0
SPELLINGS = ("unet. + lora_adapter_metadata", "bare + lora_adapter_metadata", "base_model.model. + adapter_config",
             "base_model.model. + adapter_config, by weight_name")  # fmt: skip


def _config(**fields):
    from peft import LoraConfig

    return LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False, **fields)


def _plain(config) -> dict:
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}


def _saves(unet_folder, tmp_path, seed: int, **fields):
    """{spelling: folder} written by diffusers / peft, and the reference: the bare state dict as `unet.` keys with
    lora_B times the config's scaling, no config."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import get_peft_model
    from peft.utils import get_peft_model_state_dict

    config = _config(**fields)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(unet_folder)
    unet.add_adapter(config)
    bare = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    folders = {s: tmp_path / f"spelling{i}" for i, s in enumerate(SPELLINGS)}
    for folder in folders.values():
        folder.mkdir()
    StableDiffusionPipeline.save_lora_weights(folders[SPELLINGS[0]], unet_lora_layers=bare,
                                              unet_lora_adapter_metadata=_plain(config))  # fmt: skip
    save_file(bare, folders[SPELLINGS[1]] / "lora.safetensors",
              metadata={"format": "pt", "lora_adapter_metadata": json.dumps(_plain(config))})  # fmt: skip
    torch.manual_seed(seed)
    model = get_peft_model(UNet2DConditionModel.from_pretrained(unet_folder), _config(**fields))
    model.load_state_dict({f"base_model.model.{k.replace('.weight', '.default.weight')}": v for k, v in bare.items()},
                          strict=False)  # fmt: skip  (the same tensors as the other spellings)
    for name in SPELLINGS[2:]:
        model.save_pretrained(folders[name])
        (folders[name] / "README.md").unlink(missing_ok=True)
    scale = {k: ALPHA / (RANK**0.5 if fields.get("use_rslora") else RANK) for k in bare}
    for module, alpha in fields.get("alpha_pattern", {}).items():
        scale |= {k: alpha / RANK for k in bare if f"{module}.lora_B." in k}
    reference = {f"unet.{k}": v * scale[k] if ".lora_B." in k else v for k, v in bare.items()}
    (tmp_path / "reference").mkdir()
    save_file(reference, tmp_path / "reference" / "lora.safetensors")
    return {name: str(f) for name, f in folders.items()}, str(tmp_path / "reference"), len(bare) // 2


def _check(studio, folders, reference, named, lora):
    base = gen(studio)
    studio.load_adapter(reference, adapter_name="ref")
    expected = gen(studio, {"ref": 1.0})
    studio.load_adapter(lora, adapter_name="a")
    a = gen(studio, {"a": 1.0})
    for i, (spelling, folder) in enumerate(folders.items()):
        weight_name = "adapter_model.safetensors" if spelling.endswith("by weight_name") else ""
        info = studio.load_adapter(folder, weight_name, adapter_name=f"p{i}")[-1]
        info = next(x for x in studio.list_adapters() if x["adapter_name"] == f"p{i}")
        report = info["report"]
        assert report["named"] == report["matched"] == {"unet": named}, spelling
        assert report["alpha"].startswith("lora_alpha from "), (spelling, report["alpha"])
        assert info["layout"] == {0: "peft", 1: "peft-bare"}.get(i, "peft-model")
        image = gen(studio, {f"p{i}": 1.0})
        assert not np.array_equal(image, base), spelling
        assert np.abs(image - expected).max() <= 1, spelling  # the same tensors, alpha folded in
        mix = gen(studio, {f"p{i}": 1.0, "a": 0.8})
        assert not np.array_equal(mix, a) and not np.array_equal(mix, image), spelling
        studio.slots.fuse = False
        try:
            assert np.abs(gen(studio, {f"p{i}": 1.0, "a": 0.8}) - mix).max() <= FUSED_TOLERANCE, spelling
        finally:
            studio.slots.fuse = True
        assert np.array_equal(gen(studio, {f"p{i}": 1.0, "a": 0.8}, use_adapters=False), base), spelling
        studio.delete_adapter(f"p{i}")


@pytest.mark.parametrize("fields", [{}, {"use_rslora": True}, {"alpha_pattern": {"proj_in": 8.0}}],
                         ids=["alpha", "rslora", "alpha_pattern"])  # fmt: skip
def test_peft_spellings_on_sd_give_the_alpha_folded_image(studio, allow_assets, tmp_path, monkeypatch, fields):
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{allow_assets['root']}:{tmp_path}")
    folders, reference, named = _saves(allow_assets["pipeline"] / "unet", tmp_path, seed=3, **fields)
    _check(studio, folders, reference, named, str(allow_assets["lora_a"]))


@pytest.fixture(scope="module")
def sdxl(tiny_family):
    return tiny_family("sdxl")


def test_peft_spellings_on_sdxl_give_the_alpha_folded_image(sdxl, tmp_path, monkeypatch):
    from diffusers import DiffusionPipeline

    from tiny_models.families import family_lora_state_dict

    studio = family_studio(sdxl, monkeypatch, tmp_path)
    folders, reference, named = _saves(sdxl[0] / "pipeline" / "unet", tmp_path, seed=5)
    (tmp_path / "lora").mkdir()
    other = DiffusionPipeline.from_pretrained(sdxl[0] / "pipeline")
    save_file({k: v.contiguous() for k, v in family_lora_state_dict(other, "sdxl", seed=4).items()},
              tmp_path / "lora" / "lora.safetensors")  # fmt: skip
    _check(studio, folders, reference, named, str(tmp_path / "lora"))


@pytest.mark.parametrize(
    "config, message",
    [
        ({"r": 4, "lora_alpha": 8, "alpha_pattern": {"down_blocks.*to_q": 2}},
         r"alpha_pattern key 'down_blocks\.\*to_q' is not a plain module name"),
        ({"r": 8, "lora_alpha": 8}, r"says r = 8 for .* but its lora_A has rank 4"),
        ({"r": 4, "lora_alpha": "8"}, r"lora_alpha must be a number, got '8'"),
        ({"r": 4, "lora_alpha": 1e9}, r"lora_alpha must be at most"),
    ],  # fmt: skip
    ids=["regex pattern", "other rank", "text alpha", "huge alpha"],
)
def test_a_bad_adapter_config_is_refused_naming_the_field(studio, allow_assets, tmp_path, monkeypatch, config,
                                                          message):  # fmt: skip
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{allow_assets['root']}:{tmp_path}")
    folders, _, _ = _saves(allow_assets["pipeline"] / "unet", tmp_path, seed=3)
    folder = folders[SPELLINGS[2]]
    with open(f"{folder}/adapter_config.json", "w") as f:
        json.dump({**config, "init_lora_weights": "pissa", "target_modules": "(a+)+$"}, f)
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    before = studio.list_adapters(), gen(studio, {"a": 1.0})
    with pytest.raises(AdapterError, match=message):
        studio.load_adapter(folder, adapter_name="bad")
    assert studio.list_adapters() == before[0] and np.array_equal(gen(studio, {"a": 1.0}), before[1])


def test_bare_keys_of_no_pipeline_part_are_refused(studio, allow_assets, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{allow_assets['root']}:{tmp_path}")
    (tmp_path / "x").mkdir()
    save_file({"encoder.layers.0.q_proj.lora_A.weight": torch.ones(4, 8),
               "encoder.layers.0.q_proj.lora_B.weight": torch.ones(8, 4)}, tmp_path / "x" / "lora.safetensors")
    with pytest.raises(AdapterError, match=r"this peft LoRA's keys name no pipeline part \('encoder\.layers\.0"):
        studio.load_adapter(str(tmp_path / "x"), adapter_name="x")
    assert studio.list_adapters() == []


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_bare_transformer_keys_load_as_the_prefixed_file(tiny_family, tmp_path, monkeypatch, family):
    """A transformer's bare peft keys (`transformer_blocks.0.attn.to_q.lora_A.weight`, get_peft_model_state_dict of
    the transformer) register the same modules and give the image of the `transformer.`-prefixed file."""
    from diffusers import DiffusionPipeline

    from peft_core.image import pipeline
    from tiny_models.families import family_lora_state_dict

    loaded = tiny_family(family)
    studio = family_studio(loaded, monkeypatch, tmp_path)
    state = family_lora_state_dict(DiffusionPipeline.from_pretrained(loaded[0] / "pipeline"), family, seed=2)
    for name, keys in (("prefixed", state), ("bare", {k.removeprefix("transformer."): v for k, v in state.items()})):
        (tmp_path / name).mkdir()
        save_file({k: v.contiguous() for k, v in keys.items()}, tmp_path / name / "lora.safetensors")
    base = gen(studio)
    studio.load_adapter(str(tmp_path / "prefixed"), adapter_name="p")
    info = studio.load_adapter(str(tmp_path / "bare"), adapter_name="b")[-1]
    info = next(x for x in studio.list_adapters() if x["adapter_name"] == "b")
    assert info["layout"] == "peft-bare" and info["report"]["named"] == info["report"]["matched"]
    slots = studio.slots
    assert pipeline.registered_modules(studio.pipe, slots.slot_of("b")) == pipeline.registered_modules(
        studio.pipe, slots.slot_of("p"))  # fmt: skip
    image = gen(studio, {"b": 1.0})
    assert not np.array_equal(image, base) and np.array_equal(image, gen(studio, {"p": 1.0}))
    assert np.array_equal(gen(studio, {"b": 1.0}, use_adapters=False), base)
