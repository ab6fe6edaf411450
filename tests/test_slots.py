"""Resident adapters in RAM, a few slots in the pipeline, and fusion (peft_core/image/slots.py): an image must not
depend on which slot an adapter sits in, how it got there, or what ran before it."""

import numpy as np
import pytest

from tests.conftest import gen

# A fused image differs from the unfused one by floating-point rounding only: (W + sBA)x against Wx + sB(Ax).
# Measured on the tiny pipeline: at most 1 level of 255 in a few pixels; 2 leaves room for other CPUs.
FUSED_TOLERANCE = 2


def _studio(monkeypatch, assets, slots=4, fuse=True):
    from peft_core.image.studio import ImageStudio

    monkeypatch.setenv("STUDIO_LORA_SLOTS", str(slots))
    monkeypatch.setenv("STUDIO_FUSE", "1" if fuse else "0")
    studio = ImageStudio(device="cpu")
    studio.load_base(str(assets["pipeline"]))
    return studio


def _load(studio, assets, *names):
    for name in names:
        studio.load_adapter(str(assets[name]), adapter_name=name)


def _injected(studio) -> set:
    return {name for names in studio.pipe.get_list_adapters().values() for name in names}


def test_one_slot_holds_one_adapter_and_refills_give_the_same_image(monkeypatch, allow_assets):
    """With one slot, every switch refills it: by copy (same layers and shapes) or by re-adding with peft
    (lora_a also adapts the text encoder). Each image equals the one a studio with room for all makes."""
    roomy = _studio(monkeypatch, allow_assets, slots=8)
    _load(roomy, allow_assets, "lora_a", "lora_b", "unet_only_a")
    expected = {n: gen(roomy, {n: 0.8}) for n in ("lora_a", "lora_b", "unet_only_a")}
    expected["mix"] = gen(roomy, {"lora_a": 0.5, "lora_b": 0.7})

    tight = _studio(monkeypatch, allow_assets, slots=1)
    _load(tight, allow_assets, "lora_a", "lora_b", "unet_only_a")
    assert len(_injected(tight)) == 1  # three resident, one in the pipeline
    for name in ("lora_b", "unet_only_a", "lora_a", "unet_only_a", "lora_b", "lora_a"):
        assert np.array_equal(gen(tight, {name: 0.8}), expected[name]), name
    assert tight.slots.stats["copy_fills"] >= 2 and tight.slots.stats["inject_fills"] >= 2
    # A mix of two with one slot: a second slot is made for it.
    assert np.array_equal(gen(tight, {"lora_a": 0.5, "lora_b": 0.7}), expected["mix"])


def test_the_pipeline_holds_at_most_the_slots_whatever_is_resident(monkeypatch, allow_assets):
    studio = _studio(monkeypatch, allow_assets, slots=2)
    for i in range(6):
        studio.load_adapter(str(allow_assets["lora_b" if i % 2 else "unet_only_a"]), adapter_name=f"x{i}")
    assert len(studio.list_adapters()) == 6
    assert len(_injected(studio)) == 2
    # the adapters emptied out of a slot left no tensors behind in the layers either
    held = {n for part in (studio.pipe.unet, studio.pipe.text_encoder) for m in part.modules()
            for n in getattr(m, "lora_A", {})}  # fmt: skip
    assert held == _injected(studio)
    # every one of them still answers, and equal adapters give equal images wherever they sit
    images = [gen(studio, {f"x{i}": 1.0}) for i in range(6)]
    assert all(np.array_equal(images[i], images[i % 2]) for i in range(6))
    assert not np.array_equal(images[0], images[1])


def test_a_deleted_adapter_leaves_ram_and_slot(monkeypatch, allow_assets):
    studio = _studio(monkeypatch, allow_assets, slots=2)
    _load(studio, allow_assets, "lora_a", "lora_b")
    b = gen(studio, {"lora_b": 1.0})
    studio.delete_adapter("lora_a")
    assert "lora_a" not in studio.slots.residents and studio.slots.slot_of("lora_a") is None
    assert np.array_equal(gen(studio, {"lora_b": 1.0}), b)


def test_fused_is_close_to_unfused_and_unfusing_is_exact(monkeypatch, allow_assets):
    plain = _studio(monkeypatch, allow_assets, fuse=False)
    _load(plain, allow_assets, "lora_a", "lora_b")
    fused = _studio(monkeypatch, allow_assets, fuse=True)
    _load(fused, allow_assets, "lora_a", "lora_b")
    base = gen(fused, use_adapters=False)
    mixes = ({"lora_a": 1.0}, {"lora_a": 0.5, "lora_b": 1.0}, {"lora_b": -1.0})
    images = []
    for mix in mixes:
        unfused_image = gen(plain, mix)
        images.append(fused_image := gen(fused, mix))
        assert fused.slots.fused and not plain.slots.fused
        assert np.abs(fused_image - unfused_image).max() <= FUSED_TOLERANCE, mix
        assert not np.array_equal(fused_image, base)
        assert np.array_equal(gen(fused, mix), fused_image)  # the same request, the same bits
    # Back to earlier mixes: their merged weights come from the cache, with the bits the merge gave.
    for mix, image in zip(mixes, images, strict=True):
        assert np.array_equal(gen(fused, mix), image), mix
    assert fused.slots.stats["cached_fuses"] >= len(mixes)
    # ... switching straight from one fused mix to the next, without restoring the base weights in between
    assert fused.slots.stats["fused_to_fused"] >= len(mixes)
    # Unfusing restores the base weights exactly: the base image and every base tensor, bit for bit.
    assert np.array_equal(gen(fused, {"lora_a": 1.0}, use_adapters=False), base)
    assert not fused.slots.fused
    plain_base = {k: v for k, v in plain.pipe.unet.state_dict().items() if "lora_" not in k}
    fused_base = {k: v for k, v in fused.pipe.unet.state_dict().items() if "lora_" not in k}
    assert plain_base.keys() == fused_base.keys()
    assert all(np.array_equal(plain_base[k].numpy(), fused_base[k].numpy()) for k in plain_base)


def test_fusion_is_skipped_past_its_memory_cap(monkeypatch, allow_assets):
    monkeypatch.setenv("STUDIO_FUSE_MAX_MB", "0")
    studio = _studio(monkeypatch, allow_assets, fuse=True)
    _load(studio, allow_assets, "lora_a")
    gen(studio, {"lora_a": 1.0})
    assert not studio.slots.fused and studio.slots.stats["too_big_to_fuse"] == 1


@pytest.mark.parametrize("value", ["-1", "x"])
def test_bad_slot_setting_is_refused_by_name(monkeypatch, allow_assets, value):
    from peft_core.errors import InputError
    from peft_core.image.studio import ImageStudio

    monkeypatch.setenv("STUDIO_LORA_SLOTS", value)
    with pytest.raises(InputError, match="STUDIO_LORA_SLOTS"):
        ImageStudio(device="cpu").load_base(str(allow_assets["pipeline"]))
