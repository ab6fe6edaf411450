"""The app module itself: importing it loads nothing, the CLI flags, MCP, and the ZeroGPU wrapper."""

import subprocess
import sys
import types

import pytest


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
    assert gpu(f)(1) == 2 and calls == [f]
    monkeypatch.setitem(sys.modules, "spaces", None)  # "not importable"
    assert gpu(f) is f


@pytest.mark.slow
def test_mcp_server_lists_the_endpoints(assets):
    import json
    import urllib.request

    import app
    from peft_core.images import ImageStudio

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
    from peft_core.images import ImageStudio
    from peft_core.text import TextStudio

    images, text = ImageStudio(device="cpu"), TextStudio(device="cpu")
    thread = app.load_defaults_in_background(images, text)
    assert images.startup.loading and text.startup.loading  # begun before the thread could finish
    assert [a["adapter_name"] for a in images.list_adapters()] == ["night", "outline", "stripes", "pastel"]
    assert [a["adapter_name"] for a in text.list_adapters()] == ["pirate", "formal", "shouting"]
    thread.join(timeout=60)
    assert images.startup.error is None and text.startup.error is None
