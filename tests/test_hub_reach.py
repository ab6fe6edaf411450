"""Loading feedback with no Hub (issue #19): a Hub load says "contacting the Hub…" at once and, with no Hub reachable,
is refused within seconds by one short bounded check, saying why, instead of sitting out the network's timeouts;
the Hub presets are greyed with the reason; a reachable Hub (olah on loopback) is not held up."""

import contextlib
import socket
import time
from types import SimpleNamespace

import gradio as gr
import pytest

from peft_core import hub
from peft_core.presets import presets
from tests.hubserver import running_hub, use_endpoint
from ui.image_handlers import ImageHandlers
from ui.preset_gallery import card_caption, gallery_items

# huggingface_hub's own timeouts in these tests: a load that waited for them would take this long per request.
LIBRARY_TIMEOUT_S = 30
# The check's bound plus room for a machine shared with other test runs.
QUICK_S = hub.REACH_TIMEOUT_S + 3


@pytest.fixture(autouse=True)
def fresh_answer(monkeypatch):
    """Each test asks the Hub afresh (the answer is otherwise kept for REACH_MEMO_S)."""
    monkeypatch.setattr(hub, "_reach", {"endpoint": None, "at": 0.0, "why": None})


@contextlib.contextmanager
def silent_endpoint(tmp_path):
    """A Hub endpoint that accepts connections and never answers: the slow way for a network to fail (a refused
    port fails at once)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)  # never accepted: the kernel completes the handshake, nobody ever answers
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        with use_endpoint(endpoint, tmp_path / "hf-home", timeout=LIBRARY_TIMEOUT_S):
            yield endpoint


def page() -> SimpleNamespace:
    """The page's components the load handlers answer with, as names."""
    return SimpleNamespace(**{n: n for n in ("load_note", "resident", "ticks", "x_name", "y_name")})


class Progress:
    """Records what a handler shows in its progress line, with when."""

    def __init__(self):
        self.shown, self.start = [], time.monotonic()

    def __call__(self, value=None, desc=None, **kwargs):
        self.shown.append((time.monotonic() - self.start, desc))


@pytest.fixture
def image_studio(studio, allow_assets):
    """conftest's tiny-pipeline studio with one adapter resident (what a refused load must leave as it was)."""
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    return studio


def test_no_hub_a_load_is_refused_quickly_saying_why(image_studio, tmp_path):
    on = ImageHandlers(image_studio, page())
    before = image_studio.list_adapters()
    with silent_endpoint(tmp_path) as endpoint:
        progress = Progress()
        start = time.monotonic()
        with pytest.raises(gr.Error) as refused:
            on.ui_load_adapter(repo_id="some-org/some-lora", weight_name="", adapter_name="", revision="main",
                               ticks={}, progress=progress)  # fmt: skip
        took = time.monotonic() - start
    message = str(refused.value.message)
    assert took < QUICK_S, f"refused after {took:.1f} s"
    assert "'some-org/some-lora'" in message and "unreachable" in message and endpoint in message
    assert progress.shown[0][1] == "contacting the Hub for some-org/some-lora…" and progress.shown[0][0] < 0.5
    assert image_studio.list_adapters() == before  # nothing lost


def test_offline_mode_is_said_at_once(image_studio, tmp_path):
    on = ImageHandlers(image_studio, page())
    with use_endpoint("http://127.0.0.1:9", tmp_path / "hf-home", offline=True):
        start = time.monotonic()
        with pytest.raises(gr.Error, match="HF_HUB_OFFLINE is set"):
            on.ui_load_pipeline(model_id="some-org/some-pipeline", revision="main", progress=Progress())
        assert time.monotonic() - start < 1
    assert image_studio.info.model_id.endswith("tiny-sd")


def test_bundled_and_local_loads_never_ask_the_hub(image_studio, allow_assets, tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "unreachable_reason", lambda: pytest.fail("asked the Hub for a local load"))
    on = ImageHandlers(image_studio, page())
    progress = Progress()
    with silent_endpoint(tmp_path):
        on.ui_load_adapter(repo_id=str(allow_assets["lora_b"]), weight_name="", adapter_name="b", revision="main",
                           ticks={}, progress=progress)  # fmt: skip
    assert not any("contacting" in (desc or "") for _, desc in progress.shown)
    assert "b" in [a["adapter_name"] for a in image_studio.list_adapters()]


def test_hub_presets_are_greyed_with_the_reason_and_refused_at_once(image_studio, tmp_path):
    on = ImageHandlers(image_studio, page())
    with silent_endpoint(tmp_path):
        captions = dict((caption.split(":")[0], caption) for _, caption in gallery_items(on.presets, "cpu"))
        sdxl = next(i for i, p in enumerate(on.presets) if p.name == "SDXL + 3DRedmond")
        start = time.monotonic()
        with pytest.raises(gr.Error) as refused:
            on.ui_preset(ticks={}, progress=Progress(), evt=SimpleNamespace(index=sdxl))
        assert time.monotonic() - start < QUICK_S
    assert "unavailable here" in captions["SDXL + 3DRedmond"]
    assert "needs a GPU" in captions["SDXL + 3DRedmond"] and "Hub is unreachable" in captions["SDXL + 3DRedmond"]
    assert "unavailable" not in captions["Shapes"]  # "Shapes: night": the bundled demos stay as they are
    message = str(refused.value.message)
    assert "'SDXL + 3DRedmond' is not available here" in message and "unreachable" in message
    assert image_studio.info.model_id.endswith("tiny-sd")  # nothing started loading


def test_text_presets_from_the_hub_are_greyed_without_it(tmp_path):
    """The Text tab's preset cards (captioned buttons, preset_gallery.card_caption): the Hub one says why it cannot
    run, the bundled ones show their note."""
    with silent_endpoint(tmp_path):
        shown = {p.name: card_caption(p, "cpu") for p in presets("text")}
    caption, why = shown["OPT-350m + LoRA"]
    assert "the Hub is unreachable" in why and "GPU" not in why
    assert caption == f"OPT-350m + LoRA\nunavailable here: {why}"
    assert shown["Text: pirate"] == ("Text: pirate\nsprinkles 'arr'", None)


@pytest.mark.hub
def test_a_reachable_hub_is_not_held_up(image_studio, assets, tmp_path):
    with running_hub(tmp_path / "hub") as server:
        server.add_repo("test-org/lora", assets["lora_b"])
        assert hub.unreachable_reason() is None
        on = ImageHandlers(image_studio, page())
        progress = Progress()
        shown = on.ui_load_adapter(repo_id="test-org/lora", weight_name="", adapter_name="hub_b", revision="main",
                                   ticks={}, progress=progress)  # fmt: skip
    assert "Loaded **hub_b** from `test-org/lora`" in shown["load_note"]
    assert progress.shown[0][1] == "contacting the Hub for test-org/lora…"
    captions = [caption for _, caption in gallery_items([p for p in presets("images") if not p.offline], "cpu")]
    assert all("needs a GPU" in c for c in captions)


def test_only_presets_marked_needs_gpu_ask_for_one(monkeypatch):
    """Each preset says whether it needs a GPU: on a CPU with the Hub reachable, exactly those are unavailable and
    the reason names the GPU; on CUDA none is."""
    from peft_core.presets import PRESETS
    from ui.preset_gallery import unavailable

    monkeypatch.setattr(hub, "unreachable_reason", lambda: None)
    marked = {p.name for p in PRESETS if p.needs_gpu}
    assert {"SDXL + 3DRedmond", "FLUX.1-schnell", "SD 3.5 Large"} <= marked and "OPT-350m + LoRA" not in marked
    on_cpu = {p.name: unavailable(p, "cpu") for p in PRESETS}
    assert {name for name, why in on_cpu.items() if why} == marked
    assert all("needs a GPU" in on_cpu[name] for name in marked)
    assert not any(unavailable(p, "cuda:0") for p in PRESETS)
