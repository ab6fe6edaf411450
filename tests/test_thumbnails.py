"""The image adapter cards' pictures (peft_core/image/thumbnails.py, issue #19 item 3): a model card's widget image
served by a real Hub server (olah), resized and re-encoded; hostile widget urls and files refused without a download
where the listing already says no, the load and the pipeline's output untouched; a generated picture equal to the
generation it stands for, made once across sessions and reloads; STUDIO_THUMBNAILS respected."""

import io
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from peft_core import hub, limits, sessions
from peft_core.image.studio import ImageStudio
from peft_core.startup import Startup
from tests.conftest import gen, pixels
from tests.hubserver import running_hub

WEIGHTS = "pytorch_lora_weights.safetensors"


def card(url: str, text: str = "a blue square") -> str:
    return f'---\nwidget:\n- text: "{text}"\n  output:\n    url: {url}\n---\n\n# a LoRA\n\nA test LoRA.\n'


def png(width=200, height=150, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring `width` x `height` pixels, in a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b"")  # fmt: skip


# name -> (widget url, extra files, whether the picture may be downloaded at all)
HOSTILE = {
    "parent": ("../x.png", {}, False),
    "scheme": ("https://evil/x.png", {}, False),
    "absolute": ("/etc/passwd", {}, False),
    "unlisted": ("images/other.png", {}, False),
    "text": ("notes.txt", {"notes.txt": "not a picture"}, False),
    "oversize": ("images/big.png", {"images/big.png": png(64, 64, seed=3)}, False),  # over a patched 1,000 bytes
    "bomb": ("images/huge.png", {"images/huge.png": png_declaring(100_000, 100_000)}, True),
    "not_an_image": ("images/fake.png", {"images/fake.png": "this is not a PNG at all, only text " * 8}, True),
}


@pytest.fixture(scope="module")
def hub_repos(tmp_path_factory, assets):
    weights = (assets["lora_a"] / WEIGHTS).read_bytes()
    with running_hub(tmp_path_factory.mktemp("hub")) as server:
        server.add_repo("test-org/tiny-sd", assets["pipeline"])
        server.add_repo("test-org/widget", {"README.md": card("images/x.png"), WEIGHTS: weights,
                                            "images/x.png": png()})  # fmt: skip
        for name, (url, files, _) in HOSTILE.items():
            server.add_repo(f"test-org/{name}", {"README.md": card(url), WEIGHTS: weights, "images/x.png": png(),
                                                 **files})  # fmt: skip
        yield server


@pytest.fixture(scope="module")
def hub_studio(hub_repos):
    s = ImageStudio(device="cpu")
    s.load_base("test-org/tiny-sd", "main")
    return s


@pytest.fixture
def downloads(monkeypatch):
    """Every file asked of a repo through hub.Repo.file_path (the only way a picture downloads)."""
    asked = []
    file_path = hub.Repo.file_path

    def recorded(repo, filename, force_download=False):
        asked.append(filename)
        return file_path(repo, filename, force_download)

    monkeypatch.setattr(hub.Repo, "file_path", recorded)
    return asked


@pytest.fixture
def no_generation(monkeypatch, hub_studio):
    def refuse(*args, **kwargs):
        raise AssertionError("a picture was generated")

    monkeypatch.setattr(hub_studio.thumbnails, "_generated", refuse)


def adapter(studio, name) -> dict:
    return next(a for a in studio.list_adapters() if a["adapter_name"] == name)


@pytest.mark.hub
def test_the_widget_image_is_the_cards_picture_resized(hub_studio, downloads, monkeypatch):
    monkeypatch.setenv("STUDIO_THUMBNAILS", "auto")  # a widget wins over generating, even where one could be made
    hub_studio.load_adapter("test-org/widget", adapter_name="widget")
    calls = []
    monkeypatch.setattr(hub_studio, "generate", lambda *a, **k: calls.append(a))
    path = hub_studio.thumbnails.make(adapter(hub_studio, "widget"))
    expected = Image.open(io.BytesIO(png())).convert("RGB")
    expected.thumbnail((limits.THUMBNAIL_PX, limits.THUMBNAIL_PX))
    made = Image.open(path)
    assert made.format == "PNG" and made.size == (limits.THUMBNAIL_PX, 96) and not calls
    assert np.array_equal(pixels(made.convert("RGB")), pixels(expected))
    assert path.read_bytes() != png()  # ours, re-encoded, not the stranger's file
    assert "images/x.png" in downloads
    # the card's widget text is the prompt a generated picture would use
    assert hub_studio.thumbnails.request(adapter(hub_studio, "widget")).prompt == "a blue square"


@pytest.mark.hub
@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_widget_gives_no_picture_and_changes_nothing(hub_studio, downloads, no_generation, monkeypatch,
                                                                name):  # fmt: skip
    url, _, may_download = HOSTILE[name]
    monkeypatch.setenv("STUDIO_THUMBNAILS", "hub")
    monkeypatch.setattr(limits, "THUMBNAIL_MAX_BYTES", 1000 if name == "oversize" else limits.THUMBNAIL_MAX_BYTES)
    if "widget" not in [a["adapter_name"] for a in hub_studio.list_adapters()]:
        hub_studio.load_adapter("test-org/widget", adapter_name="widget")
    base, reference = gen(hub_studio), gen(hub_studio, {"widget": 1.0})
    hub_studio.load_adapter(f"test-org/{name}", adapter_name=name)  # the load succeeds
    assert hub_studio.thumbnails.make(adapter(hub_studio, name)) is None
    # same weights as the clean repo: the same image, and the base is as it was
    assert np.array_equal(gen(hub_studio, {name: 1.0}), reference) and np.array_equal(gen(hub_studio), base)
    pictures = [f for f in downloads if f not in (WEIGHTS, "README.md")]
    assert pictures == ([url] if may_download else []), pictures
    hub_studio.delete_adapter(name)


@pytest.mark.hub
def test_off_reads_no_widget(hub_studio, downloads, no_generation, monkeypatch):
    monkeypatch.setenv("STUDIO_THUMBNAILS", "off")
    hub_studio.load_adapter("test-org/widget", revision="main", adapter_name="widget_off")
    assert hub_studio.thumbnails.make(adapter(hub_studio, "widget_off")) is None
    assert "images/x.png" not in downloads


@pytest.fixture
def counted(studio, monkeypatch):
    """The studio's generations, counted."""
    calls = []
    generate = studio.generate

    def counting(request, progress=None):
        calls.append(request)
        return generate(request, progress)

    monkeypatch.setattr(studio, "generate", counting)
    return calls


def test_a_made_picture_is_the_generation_it_stands_for_made_once(studio, allow_assets, counted, monkeypatch):
    monkeypatch.setenv("STUDIO_THUMBNAILS", "auto")
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    row = adapter(studio, "a")
    path = studio.thumbnails.make(row)
    request = studio.thumbnails.request(row)
    assert request.adapters == {"a": 1.0} and request.seed == limits.THUMBNAIL_SEED and request.use_adapters
    assert request.prompt == "sks style" and request.steps is None  # its trigger words; the pipeline's defaults
    expected = pixels(studio.generate(request).convert("RGB"))
    assert np.array_equal(pixels(Image.open(path).convert("RGB")), expected)
    assert not np.array_equal(expected, pixels(studio.generate(request.__class__(request.prompt, {}, True, 0))))
    assert len(counted) == 3  # the picture, then the two made here to compare
    # another session loading the same file, and a reload, reuse it: no generation
    with sessions.bound("visitor-1"):
        studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="mine")
        assert studio.thumbnails.make(adapter(studio, "mine")) == path
    studio.delete_adapter("a")
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="again")
    assert studio.thumbnails.make(adapter(studio, "again")) == path and len(counted) == 3


def test_hub_and_off_make_none_and_auto_skips_a_large_pipeline_on_a_cpu(studio, allow_assets, counted, monkeypatch):
    studio.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")  # a card without a widget
    row = adapter(studio, "b")
    for mode in ("off", "hub"):
        monkeypatch.setenv("STUDIO_THUMBNAILS", mode)
        assert studio.thumbnails.make(row) is None
    monkeypatch.setenv("STUDIO_THUMBNAILS", "auto")
    monkeypatch.setattr(limits, "THUMBNAIL_CPU_MAX_WORK", 32 * 32 * 25 - 1)  # just under the tiny default image
    assert studio.thumbnails.make(row) is None and not counted
    monkeypatch.setattr(limits, "THUMBNAIL_CPU_MAX_WORK", 32 * 32 * 25)  # (a key tried in vain is not tried again)
    studio.load_adapter(str(allow_assets["unet_only_a"]), adapter_name="small_enough")
    assert studio.thumbnails.make(adapter(studio, "small_enough")) is not None and len(counted) == 1


def test_a_bad_setting_is_refused_naming_the_choices(monkeypatch):
    from peft_core import settings
    from peft_core.errors import InputError

    monkeypatch.setenv("STUDIO_THUMBNAILS", "always")
    with pytest.raises(InputError, match="STUDIO_THUMBNAILS='always' must be one of auto, hub, off"):
        settings.current()


def test_work_after_a_background_load_delays_nothing():
    """The defaults' pictures are made after the studios open, in a thread of their own."""
    startup, started, release = Startup(), threading.Event(), threading.Event()
    startup.after("slow work", lambda: (started.set(), release.wait(10)))
    startup.begin()
    startup.finish()  # returns at once: the slow work waits in its own thread
    assert not startup.loading
    startup.wait()
    assert started.wait(10)
    release.set()


def test_the_pages_follow_up_draws_each_picture_once(studio, allow_assets, counted, monkeypatch):
    """ImageHandlers.ui_thumbnails: the cards without a picture get one and are redrawn; asked again with nothing
    new, it answers with no redraw (which ends the chain of redraws it is part of)."""
    from types import SimpleNamespace

    import gradio as gr

    from ui.image_handlers import ImageHandlers

    monkeypatch.setenv("STUDIO_THUMBNAILS", "auto")
    studio.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")
    on = ImageHandlers(studio, SimpleNamespace(**{n: n for n in ("resident", "ticks", "x_name", "y_name")}))
    shown = on.refreshed(studio.list_adapters(), ticks={"b": [True, 0.5]})["resident"]
    assert shown["adapters"][0]["thumbnail"] is None  # drawn at once, without its picture
    redrawn = on.ui_thumbnails(shown=shown)["resident"]
    path = redrawn["adapters"][0]["thumbnail"]
    assert path and Image.open(path).size == (32, 32) and redrawn["ticks"] == {"b": [True, 0.5]}
    again = on.ui_thumbnails(shown=redrawn)["resident"]
    assert isinstance(again, type(gr.skip())) and len(counted) == 1


def test_decode_checks_the_declared_size_before_decoding(tmp_path):
    """Under PIL's own bomb limit (89 M pixels) but over ours: refused from the header, nothing decoded."""
    from peft_core.image.thumbnails import decode

    (tmp_path / "big.png").write_bytes(png_declaring(5000, 5000))
    with pytest.raises(ValueError, match="declares 5000x5000 pixels"):
        decode(tmp_path / "big.png")
    (tmp_path / "ok.png").write_bytes(png(300, 100))
    assert decode(tmp_path / "ok.png").size == (limits.THUMBNAIL_PX, 43)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.gif")  # a format outside the allowlist, whatever its name
    (tmp_path / "a.png").write_bytes((tmp_path / "a.gif").read_bytes())
    with pytest.raises(Exception, match="cannot identify"):
        decode(tmp_path / "a.png")
