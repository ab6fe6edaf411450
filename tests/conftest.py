"""Shared fixtures: a tiny pipeline and LoRA repos in every layout, built once per session from configs."""

import contextlib
import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from peft_core import settings
from tiny_models.image import build_tiny_pipeline, lora_state_dict, write_repo
from tiny_models.text import build_tiny_lm, rename_keys, write_adapter

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# The Hub is unreachable here; a test that forgot the olah fixture must fail fast, not hang.
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")



class EnvPatch(pytest.MonkeyPatch):
    """pytest's MonkeyPatch whose environment changes reach peft_core's settings, which are read once
    (peft_core/settings.py): every setenv, delenv and undo is followed by `settings.reload()`. Every test's
    `monkeypatch` is one; a fixture of a wider scope uses `with EnvPatch.context() as mp:`."""

    def setenv(self, name, value, prepend=None):
        super().setenv(name, value, prepend)
        settings.reload()

    def delenv(self, name, raising=True):
        super().delenv(name, raising)
        settings.reload()

    def undo(self):
        super().undo()
        settings.reload()


@pytest.fixture
def monkeypatch():
    """pytest's own fixture, as an EnvPatch: a test's STUDIO_* setenv is what the code under test reads."""
    with EnvPatch.context() as patch:
        yield patch


ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]  # the tiny LM's linear layers


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
        # As diffusers' 2023 training scripts saved it: no "unet." prefix (the layout of many Hub LoRAs that year)
        "attn_procs_no_prefix": write_repo(
            root / "attn-procs-no-prefix",
            {"lora.safetensors": {_attn_procs(k).removeprefix("unet."): v for k, v in unet_a.items()}},
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


@pytest.fixture(scope="session")
def lm_assets(tmp_path_factory):
    """{name: folder}: the tiny LM and adapter folders for it, under one root that tests allow as local paths."""
    from peft import LoHaConfig, LoraConfig

    root = tmp_path_factory.mktemp("text-assets")
    model = build_tiny_lm(root / "tiny-lm")
    base = str(root / "tiny-lm")

    def lora(seed, r=4, targets=ALL):
        return LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, init_lora_weights=False), seed

    folders = {"root": root, "lm": root / "tiny-lm", "lm_copy": shutil.copytree(root / "tiny-lm", root / "lm-copy")}
    for name, (config, seed) in {
        "lora_a": lora(1),
        "lora_b": lora(2),
        "lora_c_r2": lora(3, r=2, targets=["q_proj", "v_proj"]),
    }.items():
        folders[name] = write_adapter(model, root / name.replace("_", "-"), config, seed, base)
    folders["loha"] = write_adapter(
        model, root / "loha", LoHaConfig(r=4, alpha=8, target_modules=ALL, init_weights=False), 4, base
    )
    # Made for another architecture: GPT-2 style names that this Llama does not have.
    folders["other_arch"] = rename_keys(
        folders["lora_a"], root / "other-arch", lambda k: k.replace("model.layers.", "transformer.h.")
    )
    # Half fits: layer 1's weights are named for a layer 7 that does not exist.
    folders["half_fits"] = rename_keys(
        folders["lora_a"], root / "half-fits", lambda k: k.replace("layers.1.", "layers.7.")
    )
    broken = rename_keys(folders["lora_a"], root / "truncated", lambda k: k)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    folders["truncated"] = broken
    return folders


@pytest.fixture(scope="module")
def one_thread():
    """The tiny models are a few thousand parameters: one torch thread beats two fighting over a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def allow_lm(monkeypatch, lm_assets):
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(lm_assets["root"]))
    return lm_assets


@pytest.fixture
def allow_assets(monkeypatch, assets):
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(assets["root"]))
    return assets


@pytest.fixture
def studio(allow_assets):
    """A fresh image studio holding the tiny pipeline and no adapters."""
    from peft_core.image.studio import ImageStudio

    s = ImageStudio(device="cpu")
    s.load_base(str(allow_assets["pipeline"]))
    return s


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def gen(studio, mix=None, use_adapters=True, seed=0, prompt="a red circle") -> np.ndarray:
    """The pixels of a fast 4-step 32x32 generation with the tiny pipeline."""
    from peft_core.image.studio import ImageRequest

    request = ImageRequest(prompt, mix or {}, use_adapters, seed, steps=4, guidance_scale=5.0, width=32, height=32)
    return pixels(studio.generate(request))


@contextlib.contextmanager
def launch_app(assets, adapters=(), lm_assets=None, text_adapters=()):
    """The real app around studios holding the tiny pipeline and LM (and the named adapters), served on a free
    loopback port."""
    import app
    from peft_core.image.studio import ImageStudio
    from peft_core.text.studio import TextStudio

    with EnvPatch.context() as env:
        env.setenv("STUDIO_LOCAL_DIRS", os.pathsep.join(str(a["root"]) for a in (assets, lm_assets) if a))
        studio, text = ImageStudio(device="cpu"), TextStudio(device="cpu")
        studio.load_base(str(assets["pipeline"]))
        for name in adapters:
            studio.load_adapter(str(assets[name]), adapter_name=name)
        if lm_assets:
            text.load_base(str(lm_assets["lm"]))
            for name in text_adapters:
                text.load_adapter(str(lm_assets[name]), adapter_name=name)
        demo = app.build_demo(studio, text)
        demo.queue(default_concurrency_limit=4).launch(
            prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, css=app.CSS
        )
        try:
            yield demo.local_url
        finally:
            demo.close()


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory):
    """tiny_family(name) -> (root, pipeline): a family's tiny pipeline (tiny_models/families.py), built and saved
    once per test session as root / "pipeline", for the test files that each need one (layouts, LyCORIS, SD3).
    Each call loads its own copy from disk: family_lora_state_dict leaves peft's layer wrappers behind in the
    pipeline it is given, which changes the module names the next file would read."""
    saved = {}

    def get(name: str):
        from diffusers import DiffusionPipeline

        if name not in saved:
            from tiny_models.families import build_tiny_family

            saved[name] = tmp_path_factory.mktemp(name)
            build_tiny_family(name, saved[name] / "pipeline")
        return saved[name], DiffusionPipeline.from_pretrained(saved[name] / "pipeline")

    return get


def family_studio(family, monkeypatch, tmp_path):
    """An ImageStudio on the tiny pipeline `family` ((root, pipeline) from tiny_family), reading local files under
    its root and `tmp_path`."""
    from peft_core.image.studio import ImageStudio

    root = family[0]
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{root}:{tmp_path}")
    studio = ImageStudio(device="cpu")
    studio.load_base(str(root / "pipeline"))
    return studio


def wait_for_the_others(studio, timeout_s: float = 60) -> None:
    """Hold the first visitor's first step until the second waits for the pipeline: on a tiny pipeline the first
    could otherwise finish every step before the second's request, still being checked, asks for the lock."""
    deadline = time.monotonic() + timeout_s
    while not studio._lock.contended and time.monotonic() < deadline:
        time.sleep(0.005)


def together(calls, timeout_s: float = 120) -> list:
    """Run the calls in threads started at once; each result, or the exception it raised."""
    results, start = [None] * len(calls), threading.Barrier(len(calls))

    def run(i):
        start.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # returned, for the test to assert on
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout_s)
    return results
