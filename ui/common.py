"""What the tabs share: turning the core's refusals into Gradio errors, PNG files for API clients, the CSS."""

import contextlib
import functools
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr
from gradio.data_classes import FileData

from peft_core import StudioError, hub

OUTPUT_DIR = Path(tempfile.gettempdir()) / "adapter-studio"
# Small demo images are shown enlarged with crisp pixels instead of a blur.
CSS = ".pixelated img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }\n" \
    ".adapter-card .facts { padding: 0 var(--size-2) var(--size-1); }"  # fmt: skip


def gpu(fn):
    """On ZeroGPU Spaces, `spaces.GPU` lends a GPU for each call of `fn`; where the `spaces` package is not
    importable (a laptop, CI, a dedicated GPU) `fn` is returned as it is."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(fn)


def user_errors(fn):
    """Show the core's refusals as Gradio errors (a toast on the page, an AppError for API clients)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None

    return wrapper


def user_errors_gen(fn):
    """user_errors for generator handlers (streamed progress)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None

    return wrapper


@contextlib.contextmanager
def hub_progress(progress: gr.Progress, what: str):
    """Show the Hub downloads made inside the block as a progress bar in bytes ("downloading org/name/file:
    3.1 / 9.8 MB"), and `what` (e.g. "loading org/name") before, between and after them."""
    shown = [0.0]

    def sink(p: hub.DownloadProgress) -> None:
        if p.finished:
            progress(None, desc=what)
            return
        if p.done < p.total and time.monotonic() - shown[0] < 0.1:  # ten frames a second; every chunk would flood
            return
        shown[0] = time.monotonic()
        amount = f"{_mb(p.done)} / {_mb(p.total)} MB" if p.total else f"{_mb(p.done)} MB"
        progress(p.done / p.total if p.total else None, desc=f"downloading {p.what}: {amount}")

    progress(None, desc=what)
    with hub.report_downloads(sink):
        yield


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f}" if n >= 2**20 / 10 else f"{n / 2**20:.2g}"


def png_file(image) -> FileData:
    """A PNG on disk that gradio_client receives as a file (a PIL image would reach it as a repr string)."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUTPUT_DIR / f"{uuid.uuid4().hex}.png"
    image.save(path, format="PNG")
    return FileData(path=str(path), mime_type="image/png")


def choices_update(names: list[str], value=None):
    return gr.update(choices=names, value=value if value in names else (names[-1] if names else None))


def page_url(request: gr.Request | None) -> str:
    """The address the user reached the app at (share links included), for copy-paste snippets."""
    if request is None:
        return "http://127.0.0.1:7860/"
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "127.0.0.1:7860")
    scheme = request.headers.get("x-forwarded-proto", "http")
    return f"{scheme}://{host}/"
