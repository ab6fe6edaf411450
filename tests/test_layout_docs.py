"""The docs list the files as they are: each package's __init__.py docstring names every module of its package
(docs/DEVELOPMENT.md says so), and the README's layout names every file of peft_core and ui."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("peft_core", "peft_core/image", "peft_core/text", "ui", "tiny_models", "bench", "scripts/train", "tests")


def named(text: str, path: Path) -> bool:
    return re.search(rf"(?<![\w/.]){re.escape(path.name)}\b", text) is not None


@pytest.mark.parametrize("package", PACKAGES)
def test_each_init_lists_its_files(package):
    folder = ROOT / package
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    files = [p for p in sorted(folder.glob("*.py")) if p.name != "__init__.py"]
    if package == "tests":  # the test files mirror the modules; the helpers are listed
        files = [p for p in files if not p.name.startswith("test_")]
    missing = [p.name for p in files if not named(doc, p)]
    subpackages = [p.name for p in sorted(folder.iterdir()) if (p / "__init__.py").is_file()]
    missing += [f"{name}/" for name in subpackages if f"{name}/" not in doc]
    assert files and missing == [], f"{package}/__init__.py does not name {', '.join(missing)}"


def test_the_readme_layout_names_every_file():
    layout = re.search(r"## Layout\n\n```\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    files = [p for package in ("peft_core", "peft_core/image", "peft_core/text", "ui")
             for p in sorted((ROOT / package).glob("*.py")) if p.name != "__init__.py"]  # fmt: skip
    assert len(files) > 40
    assert [p.relative_to(ROOT).as_posix() for p in files if not named(layout, p)] == []
