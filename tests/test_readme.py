"""The README's API examples run as written against the app on the bundled default."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def url():
    import app
    from peft_core.image.studio import ImageStudio
    from peft_core.text.studio import TextStudio

    images, text = ImageStudio(device="cpu"), TextStudio(device="cpu")
    app.load_defaults(images, text)
    demo = app.build_demo(images, text)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield demo.local_url
    demo.close()


def test_readme_has_api_examples():
    blocks = python_blocks()
    assert len(blocks) >= 2 and all('Client("http://127.0.0.1:7860/"' in b for b in blocks)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(url, index, capsys):
    code = python_blocks()[index].replace("http://127.0.0.1:7860/", url)
    exec(compile(code, f"README.md python block {index}", "exec"), {})
    assert capsys.readouterr().out.strip()  # every example prints what it got
