"""STUDIO_LORA_SLOTS's default (#16): 4 on a CPU, as always; on CUDA it follows the device's memory (an eighth of it
at 1 GB a slot, 4 to 16: settings.py says why). The device's memory is patched: no GPU is needed."""

from types import SimpleNamespace

import pytest

from peft_core import settings
from peft_core.errors import InputError


@pytest.fixture
def gpu(monkeypatch):
    """Make the default device CUDA with the memory set by the returned function (GiB)."""
    import torch

    monkeypatch.delenv("STUDIO_LORA_SLOTS", raising=False)
    monkeypatch.setenv("STUDIO_DEVICE", "cuda")

    def memory(gib: float) -> None:
        props = SimpleNamespace(total_memory=int(gib * 2**30))
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)

    return memory


@pytest.mark.parametrize(
    "gib, slots",
    [(8, 4), (24, 4), (40, 5), (48, 6), (80, 10), (139, 16), (192, 16)],  # 139 GiB: an H200 as torch reports it
)
def test_the_slots_follow_the_gpus_memory(gpu, gib, slots):
    gpu(gib)
    assert settings.current().lora_slots == slots


def test_the_admins_number_wins_and_a_cpu_keeps_4(gpu, monkeypatch):
    gpu(139)
    monkeypatch.setenv("STUDIO_LORA_SLOTS", "2")
    assert settings.current().lora_slots == 2
    monkeypatch.setenv("STUDIO_LORA_SLOTS", "0")
    with pytest.raises(InputError, match="STUDIO_LORA_SLOTS='0' must be positive"):
        settings.current()
    monkeypatch.delenv("STUDIO_LORA_SLOTS")
    monkeypatch.setenv("STUDIO_DEVICE", "cpu")
    assert settings.current().lora_slots == 4  # whatever torch.cuda would say: a CPU is not asked


def test_a_studio_on_a_big_gpu_builds_that_many_slots(gpu, monkeypatch, allow_assets):
    """The number reaches the pipeline: a studio loading while the device reads as an 80 GiB GPU has 10 slots.
    (The studio itself runs on the CPU here; only the default is read from the patched device.)"""
    from peft_core.image.studio import ImageStudio

    gpu(80)
    studio = ImageStudio(device="cpu")
    studio.load_base(str(allow_assets["pipeline"]))
    assert len(studio.slots.slots) == 10
