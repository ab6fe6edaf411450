"""The compiled denoiser (peft_core/image/compile.py, STUDIO_COMPILE=1): compiled once per base, never again on a
switch, a refill with another rank, the disable toggle or an unfused mix, and the images those of eager runs."""

import numpy as np
import pytest
import torch

from tests.conftest import gen, pixels
from tests.test_slots import FUSED_TOLERANCE
from tiny_models.image import lora_state_dict, write_repo


def test_the_compile_counter_counts_recompiles():
    """compiled_frames reads a private dynamo counter: it must still count a first compile and a recompile."""
    from peft_core.image.compile import compiled_frames

    torch._dynamo.reset()
    f = torch.compile(lambda x: x * 2 + 1, backend="eager", dynamic=False)
    before = compiled_frames()
    f(torch.ones(2))
    f(torch.ones(2))  # same shape: no new graph
    assert compiled_frames() == before + 1
    f(torch.ones(3))  # another shape: a recompile
    assert compiled_frames() == before + 2


@pytest.fixture(scope="module")
def rank8(assets):
    """A LoRA of rank 8 on the tiny UNet (the others have rank 4): it refills a slot by re-adding, not by copy."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(assets["pipeline"])
    return write_repo(assets["root"] / "lora-r8", {"pytorch_lora_weights.safetensors": lora_state_dict(pipe, 5, 8)})


def _studio(monkeypatch, assets, compiled: bool, fuse: bool = True):
    from peft_core.image.studio import ImageStudio

    monkeypatch.setenv("STUDIO_COMPILE", "1" if compiled else "0")
    monkeypatch.setenv("STUDIO_FUSE", "1" if fuse else "0")
    monkeypatch.setenv("STUDIO_LORA_SLOTS", "2")  # three adapters, two slots: switches refill them
    studio = ImageStudio(device="cpu")
    studio.load_base(str(assets["pipeline"]))
    for name in ("lora_a", "lora_b", "unet_only_a"):
        studio.load_adapter(str(assets[name]), adapter_name=name)
    return studio


# 20 switches between mixes of three adapters in two slots, with other weights, the base (the disable toggle) and a
# rank-8 adapter among them
SWITCHES = [
    {"lora_a": 1.0}, {"lora_b": 0.8}, {"lora_a": 0.5, "lora_b": 0.7}, {}, {"unet_only_a": 1.0},
    {"lora_a": -0.6}, {"r8": 1.0}, {"lora_b": 1.0, "r8": 0.5}, {"lora_a": 1.0}, {},
    {"lora_b": 0.3}, {"unet_only_a": 0.5, "lora_a": 0.5}, {"r8": -1.0}, {"lora_a": 1.0}, {"lora_b": 0.8},
    {}, {"lora_a": 0.5, "lora_b": 0.7}, {"r8": 1.0}, {"unet_only_a": 1.0}, {"lora_a": 0.2},
]  # fmt: skip


@pytest.mark.slow
def test_switches_refills_and_the_toggle_never_recompile(monkeypatch, allow_assets, rank8, one_thread):
    """Compiled at the first generation (minutes on a busy CPU the first time, inductor's cache after), then not
    once more: 20 mixed switches, refills with a rank-8 adapter, the disable toggle and a compare. Every image is
    eager's within the fused tolerance, and the adapted ones are not the base."""
    from peft_core.image.compile import compiled_frames
    from peft_core.image.studio import ImageRequest

    eager = _studio(monkeypatch, allow_assets, compiled=False)
    eager.load_adapter(str(rank8), adapter_name="r8")
    expected = [gen(eager, mix) for mix in SWITCHES]
    studio = _studio(monkeypatch, allow_assets, compiled=True)
    studio.load_adapter(str(rank8), adapter_name="r8")
    base = gen(studio)  # the compilation
    assert np.abs(base - gen(eager)).max() <= FUSED_TOLERANCE
    compiled = compiled_frames()
    for mix, want in zip(SWITCHES, expected, strict=True):
        image = gen(studio, mix)
        assert np.abs(image - want).max() <= FUSED_TOLERANCE, mix
        assert np.array_equal(image, base) == (not mix), mix
    assert np.array_equal(gen(studio, {"lora_a": 1.0}, use_adapters=False), base)  # the toggle
    request = ImageRequest("a red circle", {"r8": 1.0}, True, 0, steps=4, guidance_scale=5.0, width=32, height=32)
    off, on = studio.compare(request)
    assert np.array_equal(pixels(off), base) and np.abs(pixels(on) - expected[6]).max() <= FUSED_TOLERANCE
    assert compiled_frames() == compiled
    assert studio.slots.stats["inject_fills"] >= 3  # the rank-8 adapter took a slot by re-adding, more than once


@pytest.mark.slow
def test_an_unfused_mix_runs_eagerly_without_recompiling(monkeypatch, allow_assets, one_thread):
    """STUDIO_FUSE=0: a mix needs the LoRA layers' own branch, which the compiled graph was not traced with; it
    runs eagerly, so its images are eager's bit for bit and nothing compiles again, and the base stays compiled."""
    from peft_core.image.compile import compiled_frames

    eager = _studio(monkeypatch, allow_assets, compiled=False, fuse=False)
    studio = _studio(monkeypatch, allow_assets, compiled=True, fuse=False)
    base = gen(studio)
    compiled = compiled_frames()
    for mix in ({"lora_a": 1.0}, {}, {"lora_a": 0.5, "lora_b": 0.7}, {"unet_only_a": 1.0}, {}):
        image = gen(studio, mix)
        assert np.array_equal(image, gen(eager, mix)), mix
        assert np.array_equal(image, base) == (not mix), mix
    assert compiled_frames() == compiled
