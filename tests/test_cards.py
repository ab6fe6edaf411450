"""The image adapter cards (issue #19): a one-line description from the model card and the load report's line on
each, read without a download and shown as the text it is; Delete acts at once and Undo loads the adapter back,
ticked and weighted as it was (the same image, bit for bit)."""

from types import SimpleNamespace

import numpy as np

from peft_core import bundled, hub
from tests.conftest import gen
from ui.descriptions import DESCRIPTION_CHARS, description, first_line, flatten, report_line
from ui.image_handlers import ImageHandlers


def test_the_description_is_the_cards_first_prose_line():
    assert description(f"{bundled.BUNDLED_ORG}/shapes-night", "main") == (
        "Draws the shapes on a dark, near\\-black background, as at night\\."
    )
    card = "---\nlicense: mit\n---\n\n# Title\n\n![pic](x.png)\n<p align=center>hi</p>\n\nThe real line.\nMore.\n"
    assert first_line(card) == "The real line."
    assert first_line("---\nonly: metadata\n---\n") == ""
    # the Hub's (and peft's) unfilled card template: boilerplate, no description
    template = "# Model Card\n\n- **Developed by:** [More Information Needed]\n\nUsers (both direct and ...)\n"
    assert first_line(template) == ""


def test_a_strangers_card_shows_as_text_bounded():
    """Links become their text; HTML, emphasis and every Markdown character show as typed; long lines are cut."""
    shown = flatten("See [the base](http://evil/x) **now** <img src=x onerror=alert(1)> `rm -rf`")
    assert shown == "See the base now \\<img src=x onerror=alert\\(1\\)\\> rm \\-rf"
    long = flatten("word " * 200)
    assert long.endswith("…") and len(long) <= DESCRIPTION_CHARS
    assert flatten("[unclosed](http://x") == "unclosed" and flatten("a\x00b\x1b[31m") == "ab31m"
    assert flatten("by [someone]") == "by someone"  # a bracketed word, no link: both brackets go


def test_no_card_on_disk_no_description_and_no_download(monkeypatch, tmp_path):
    monkeypatch.setattr(hub.Repo, "file_path", lambda *a, **k: (_ for _ in ()).throw(AssertionError("download")))
    assert description("some-org/not-in-cache", "main") == ""
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(tmp_path))
    big = tmp_path / "big"
    big.mkdir()
    (big / "README.md").write_text("x" * (hub.MAX_CARD_BYTES + 1))
    assert description(str(big), "main") == ""  # over the card cap: not read


def test_report_line_names_layout_and_layers(studio, allow_assets):
    studio.load_adapter(str(allow_assets["kohya"]), adapter_name="k")
    line = report_line(studio.list_adapters()[0]["report"])
    assert line.startswith("kohya layout; layers registered/named: unet ") and "\\(" in line
    assert report_line({}) == "" and report_line({"unknown": 1}) == ""


def page() -> SimpleNamespace:
    return SimpleNamespace(**{n: n for n in ("resident", "ticks", "x_name", "y_name", "undo", "undo_btn")})


def test_delete_then_undo_gives_the_same_adapter_back(studio, allow_assets):
    """Delete is at once; Undo loads it back under its name, ticked at the weight it had: the same image."""
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    studio.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")
    on = ImageHandlers(studio, page())
    rows = {"a": [True, 0.6], "b": [False, 1.0]}
    before = gen(studio, {"a": 0.6})
    deleted = on.deleter("a")(ticks={**rows})
    assert [a["adapter_name"] for a in studio.list_adapters()] == ["b"]
    assert deleted["undo"]["tick"] == [True, 0.6] and deleted["undo_btn"]["visible"] is True
    assert deleted["undo_btn"]["value"] == "Undo: delete a"
    undone = on.ui_undo_delete(undo=deleted["undo"], ticks=deleted["ticks"], progress=lambda *a, **k: None)
    assert undone["ticks"]["a"] == [True, 0.6] and undone["ticks"]["b"] == [False, 1.0]
    assert undone["undo"] is None and undone["undo_btn"]["visible"] is False
    assert np.array_equal(gen(studio, {"a": 0.6}), before)
    assert not np.array_equal(gen(studio, {}, use_adapters=False), before)
