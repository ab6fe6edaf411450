"""The app module itself: importing it loads nothing, the CLI flags, MCP, and the ZeroGPU wrapper."""

import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_loads_no_model_and_no_heavy_library():
    code = "import app, sys; print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_gpu_wrapper_uses_spaces_only_when_importable(monkeypatch):
    from ui.common import gpu

    def f(x: int) -> int:
        return x + 1

    calls = []
    fake = types.ModuleType("spaces")
    fake.GPU = lambda fn: calls.append(fn) or fn
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert gpu(f)(1) == 2 and [c.__name__ for c in calls] == ["f"]  # f, run as the caller's session
    monkeypatch.setitem(sys.modules, "spaces", None)  # "not importable"
    assert gpu(f) is f


@pytest.mark.slow
def test_mcp_server_lists_the_endpoints(assets):
    import json
    import urllib.request

    import app
    from peft_core.image.studio import ImageStudio

    demo = app.build_demo(ImageStudio(device="cpu"))
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, mcp_server=True)
    try:
        with urllib.request.urlopen(f"{demo.local_url}gradio_api/mcp/schema") as response:
            tools = {tool["name"] for tool in json.load(response)}
    finally:
        demo.close()
    assert {"load_pipeline", "load_adapter", "generate", "compare", "generate_text", "merge_text_adapters"} <= tools


def test_cli_flags():
    out = subprocess.run([sys.executable, "app.py", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--share", "--server-name", "--server-port", "--mcp"):
        assert flag in out


def test_defaults_load_in_the_background_and_calls_wait_for_them():
    """`python app.py` serves the page while the bundled models load; a call made meanwhile waits for them
    instead of seeing an empty studio."""
    import app
    from peft_core.image.studio import ImageStudio
    from peft_core.text.studio import TextStudio

    images, text = ImageStudio(device="cpu"), TextStudio(device="cpu")
    thread = app.load_defaults_in_background(images, text)
    assert images.startup.loading and text.startup.loading  # begun before the thread could finish
    assert [a["adapter_name"] for a in images.list_adapters()] == ["night", "outline", "stripes", "pastel"]
    assert [a["adapter_name"] for a in text.list_adapters()] == ["pirate", "formal", "shouting"]
    thread.join(timeout=60)
    assert images.startup.error is None and text.startup.error is None


def test_a_call_during_startup_touches_no_library_until_every_default_is_in():
    """A request in the first seconds (here /add_text_adapter's core call) used to import peft while the loader
    was importing diffusers and transformers, and the default pipeline failed to load ("cannot import name
    'CLIPImageProcessor'"). Now both studios stay closed until both defaults are in: in a fresh process, the early
    call waits without importing anything, and then everything loads."""
    script = """
import sys, threading, time
import app
from peft_core.image.studio import ImageStudio
from peft_core.text.studio import TextStudio

images, text = ImageStudio(device="cpu"), TextStudio(device="cpu")
images.startup.begin()
text.startup.begin()
early = threading.Thread(target=lambda: text.add_adapter("early", r=4, lora_alpha=8, target_modules="q_proj"))
early.start()
time.sleep(1.0)
print("waiting:", early.is_alive(), [m for m in ("peft", "transformers", "diffusers") if m in sys.modules])
images.startup.begin()  # the real loader now: the same gate, run by app
app.load_defaults_in_background(images, text).join(timeout=300)
early.join(timeout=60)
names = [a["adapter_name"] for a in text.list_adapters()]
print("loaded:", images.startup.error, text.startup.error, len(images.list_adapters()), names[-1])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert "waiting: True []" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "loaded: None None 4 early" in out.stdout, out.stdout + out.stderr[-3000:]


def test_demo_adapters_that_fit_load_when_one_does_not(monkeypatch, capsys):
    """With STUDIO_MAX_ADAPTER_MB under the largest demo adapter, the others still load, and the skipped one is
    named in one line."""
    import app
    from peft_core import bundled
    from peft_core.image.studio import ImageStudio

    files = {name: bundled.bundled_path(f"{bundled.BUNDLED_ORG}/{name}") for name in bundled.DEFAULT_IMAGE_ADAPTERS}
    sizes = {name: (folder / "pytorch_lora_weights.safetensors").stat().st_size for name, folder in files.items()}
    largest = max(sizes, key=sizes.get)
    assert sorted(sizes.values())[-1] > sorted(sizes.values())[-2]  # one stands out, so a cap can split them
    monkeypatch.setenv("STUDIO_MAX_ADAPTER_MB", str((sorted(sizes.values())[-2] + 1) / 2**20))
    images = ImageStudio(device="cpu")
    app._load_image_defaults(images)
    loaded = [a["adapter_name"] for a in images.list_adapters()]
    assert largest.split("-", 1)[-1] not in loaded and len(loaded) == len(sizes) - 1
    assert f"demo adapter {bundled.BUNDLED_ORG}/{largest} skipped" in capsys.readouterr().err
