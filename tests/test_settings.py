"""The admin settings (peft_core/settings.py): read from the environment once into one frozen object, read again
only after settings.reload(); every environment read of peft_core is in settings.py."""

import ast
import dataclasses
from pathlib import Path

import pytest

from peft_core import bundled, runtime, settings

ROOT = Path(__file__).resolve().parent.parent


def test_read_once_into_one_frozen_object():
    first = settings.current()
    assert settings.current() is first
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.max_adapter_mb = 1


def test_a_change_is_read_at_the_next_current_after_reload():
    """A plain MonkeyPatch (not conftest's EnvPatch): the environment changes, the settings do not until reload."""
    before = settings.current().max_adapter_mb
    with pytest.MonkeyPatch.context() as plain:
        plain.setenv("STUDIO_MAX_ADAPTER_MB", str(before + 7))
        assert settings.current().max_adapter_mb == before
        settings.reload()
        assert settings.current().max_adapter_mb == before + 7
    settings.reload()
    assert settings.current().max_adapter_mb == before


def test_the_device_and_the_default_models_are_settings(monkeypatch):
    plain = settings.read({"STUDIO_DEVICE": "cpu"})
    assert (plain.device, plain.default_pipeline, plain.default_text_model) == (
        "cpu", bundled.BUNDLED_PIPELINE, bundled.BUNDLED_TEXT_MODEL)  # fmt: skip
    chosen = settings.read({"STUDIO_DEVICE": "cuda:1", "STUDIO_DEFAULT_PIPELINE": "org/sd",
                            "STUDIO_DEFAULT_TEXT_MODEL": "org/lm", "STUDIO_FUSE_MAX_MB": "1",
                            "STUDIO_LORA_SLOTS": "4"})  # fmt: skip (set: no GPU is asked for its memory)
    assert (chosen.device, chosen.default_pipeline, chosen.default_text_model) == ("cuda:1", "org/sd", "org/lm")
    monkeypatch.setenv("STUDIO_DEVICE", "cpu")
    assert runtime.default_device() == "cpu" and runtime.pick_device()[0] == "cpu"


def test_no_module_but_settings_reads_the_environment():
    """os.environ and os.getenv appear in settings.py alone: a new setting gets its row and its read there."""
    readers = []
    for path in sorted((ROOT / "peft_core").rglob("*.py")):
        if path.name == "settings.py" and path.parent.name == "peft_core":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                readers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert readers == []
