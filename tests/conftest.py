"""Shared fixtures: a tiny pipeline and LoRA repos in every layout, built once per session from configs."""

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.tiny import build_tiny_pipeline, lora_state_dict

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# The Hub is unreachable here; a test that forgot the olah fixture must fail fast, not hang.
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")

CARD = "---\nbase_model: tiny\ninstance_prompt: {trigger}\nlicense: mit\n---\n# {name}\nA test LoRA.\n"


def _old_diffusers(key: str) -> str:
    return key.replace(".lora_A.", ".lora.down.").replace(".lora_B.", ".lora.up.")


def _attn_procs(key: str) -> str:
    for proj, spelled in (("to_out.0", "to_out"), ("to_q", "to_q"), ("to_k", "to_k"), ("to_v", "to_v")):
        key = key.replace(f".{proj}.lora_A.", f".processor.{spelled}_lora.down.")
        key = key.replace(f".{proj}.lora_B.", f".processor.{spelled}_lora.up.")
    return key


def _kohya(key: str) -> str:
    module, _, rest = key.removeprefix("unet.").rpartition(".lora_")
    return f"lora_unet_{module.replace('.', '_')}.lora_{'down' if rest.startswith('A') else 'up'}.weight"


def write_repo(folder: Path, files: dict, trigger: str = "") -> Path:
    """A Hub-style repo folder: a model card and the given safetensors files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(CARD.format(trigger=trigger or "''", name=folder.name))
    for name, state in files.items():
        save_file({k: v.contiguous() for k, v in state.items()}, folder / name)
    return folder


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """{name: folder}: the tiny pipeline and LoRA repos under one root that tests allow as local paths."""
    root = tmp_path_factory.mktemp("assets")
    pipe = build_tiny_pipeline(root / "tiny-sd")
    a = lora_state_dict(pipe, seed=1, text_encoder=True)
    b = lora_state_dict(pipe, seed=2)
    unet_a = {k: v for k, v in a.items() if k.startswith("unet.")}
    kohya = {_kohya(k): v for k, v in unet_a.items()}
    kohya.update({k.replace("lora_down.weight", "alpha"): torch.tensor(4.0) for k in list(kohya) if "lora_down" in k})
    folders = {
        "root": root,
        "pipeline": root / "tiny-sd",
        "lora_a": write_repo(root / "lora-a", {"pytorch_lora_weights.safetensors": a}, trigger="sks style"),
        "lora_b": write_repo(root / "lora-b", {"pytorch_lora_weights.safetensors": b}),
        "two_files": write_repo(root / "two-files", {"one.safetensors": a, "two.safetensors": b}),
        "old_diffusers": write_repo(
            root / "old-diffusers", {"lora.safetensors": {_old_diffusers(k): v for k, v in unet_a.items()}}
        ),
        "attn_procs": write_repo(
            root / "attn-procs", {"lora.safetensors": {_attn_procs(k): v for k, v in unet_a.items()}}
        ),
        "kohya": write_repo(root / "kohya", {"lora.safetensors": kohya}),
        "unet_only_a": write_repo(root / "unet-only-a", {"lora.safetensors": unet_a}),
    }
    pickle_only = root / "pickle-only"
    pickle_only.mkdir()
    (pickle_only / "pytorch_lora_weights.bin").write_bytes(b"not loaded")
    folders["pickle_only"] = pickle_only
    return folders


@pytest.fixture
def allow_assets(monkeypatch, assets):
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(assets["root"]))
    return assets


@pytest.fixture
def studio(allow_assets):
    """A fresh image studio holding the tiny pipeline and no adapters."""
    from peft_core.images import ImageStudio

    s = ImageStudio(device="cpu")
    s.load_pipeline(str(allow_assets["pipeline"]))
    return s


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def gen(studio, mix=None, use_adapters=True, seed=0, prompt="a red circle") -> np.ndarray:
    """The pixels of a fast 4-step 32x32 generation with the tiny pipeline."""
    from peft_core.images import ImageRequest

    request = ImageRequest(prompt, mix or {}, use_adapters, seed, steps=4, guidance_scale=5.0, width=32, height=32)
    return pixels(studio.generate(request))


@contextlib.contextmanager
def launch_app(assets, adapters=()):
    """The real app around a studio holding the tiny pipeline (and `adapters`), served on a free loopback port."""
    import app
    from peft_core.images import ImageStudio

    old = os.environ.get("STUDIO_LOCAL_DIRS")
    os.environ["STUDIO_LOCAL_DIRS"] = str(assets["root"])
    try:
        studio = ImageStudio(device="cpu")
        studio.load_pipeline(str(assets["pipeline"]))
        for name in adapters:
            studio.load_adapter(str(assets[name]), adapter_name=name)
        demo = app.build_demo(studio)
        demo.queue(default_concurrency_limit=4).launch(
            prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, css=app.CSS
        )
        try:
            yield demo.local_url
        finally:
            demo.close()
    finally:
        if old is None:
            os.environ.pop("STUDIO_LOCAL_DIRS", None)
        else:
            os.environ["STUDIO_LOCAL_DIRS"] = old
