"""A picture per image adapter card: the model card's widget image, else one image made once with the adapter alone.

The widget image is a stranger's file named by a stranger's card (`widget: [{text, output: {url}}]`, what the Hub's
widget, ai-toolkit, fal and Replicate write). Its url must be a plain relative path that is in the repo's listing,
with an allowlisted extension and a known size under THUMBNAIL_MAX_BYTES, all checked before anything downloads;
the file comes through hub.Repo.file_path (huggingface_hub, or the repo's own folder), is decoded by PIL only after
its declared size passed THUMBNAIL_MAX_PIXELS, first frame only, and re-encoded as a small PNG of our own: the
stranger's bytes are never served. Any refusal or failure means no widget picture and one log line, never a failed
load.

Otherwise (STUDIO_THUMBNAILS=auto, on a GPU or a pipeline small enough for a CPU) the picture is made once through
the studio's own generate path (the studio hands `Thumbnails` its generate callable; this module never imports the
studio): the adapter alone at weight 1, THUMBNAIL_SEED, the pipeline's defaults, the card's prompt (the widget's
text, else the trigger words, else settings.DEFAULT_PROMPT). Pictures are cached per (base id, base revision, repo,
revision, weight_name): another session loading the same file, or a reload, reuses it. Called from a follow-up
event after the load answered, so a card shows at once and its picture after.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from peft_core import hub, limits, settings
from peft_core.errors import StudioError
from peft_core.image.requests import ImageRequest

log = logging.getLogger("adapter_studio")

THUMBNAIL_PROMPT_CHARS = 300  # a widget's text longer than this is not used as the prompt


@dataclass(frozen=True)
class CardPicture:
    """What a repo's model card offers for a thumbnail, read at load from the card and the listing (no download)."""

    widget: str | None  # the widget image's path in the repo, checked; None: no usable widget image
    prompt: str  # the widget's text, else the trigger words joined; "" when the card has neither


def check_widget_url(url, sizes: dict[str, int | None]) -> str:
    """`url` if it names a picture in the repo that may be downloaded, else raises ValueError saying why."""
    if not isinstance(url, str) or not url or len(url) > limits.THUMBNAIL_URL_CHARS:
        raise ValueError(f"widget url {str(url)[:80]!r} is not a short text")
    path = PurePosixPath(url)
    if ":" in url or "\\" in url or url.startswith("/") or ".." in path.parts or path.as_posix() != url:
        raise ValueError(f"widget url {url[:80]!r} is not a plain relative path in the repo")
    if path.suffix.lower() not in limits.THUMBNAIL_EXTENSIONS:
        raise ValueError(f"widget url {url[:80]!r} is not one of {', '.join(limits.THUMBNAIL_EXTENSIONS)}")
    if url not in sizes:
        raise ValueError(f"widget url {url[:80]!r} is not a file of the repo")
    size = sizes[url]
    if size is None or size > limits.THUMBNAIL_MAX_BYTES:
        raise ValueError(f"widget image {url[:80]!r} is {size} bytes; at most {limits.THUMBNAIL_MAX_BYTES} are read")
    return url


def _text(entry: dict) -> str:
    """A widget entry's prompt when it is printable text of at most THUMBNAIL_PROMPT_CHARS, else ""."""
    text = entry.get("text")
    text = text.strip() if isinstance(text, str) else ""
    return text if len(text) <= THUMBNAIL_PROMPT_CHARS and text.isprintable() else ""


def card_picture(card_data: dict, sizes: dict[str, int | None], trigger_words: list[str]) -> CardPicture:
    """The first usable widget image of a card and the prompt to make a picture with (that widget's text, else the
    first widget text, else the trigger words); downloads nothing."""
    entries = card_data.get("widget") if isinstance(card_data, dict) else None
    entries = entries[: limits.THUMBNAIL_WIDGETS_READ] if isinstance(entries, list) else []
    entries = [e for e in entries if isinstance(e, dict)]
    widget, prompt = None, ""
    for entry in entries:
        output = entry.get("output")
        url = output.get("url") if isinstance(output, dict) else None
        if url is None:
            continue
        try:
            widget, prompt = check_widget_url(url, sizes), _text(entry)
            break
        except ValueError as exc:
            log.info("no widget picture: %s", exc)
    prompt = prompt or next((t for t in map(_text, entries) if t), "") or ", ".join(trigger_words)
    return CardPicture(widget, prompt)


def decode(path: Path):
    """The picture at `path` as a small RGB PIL image, or raises: the declared size is checked before decoding."""
    from PIL import Image

    if path.stat().st_size > limits.THUMBNAIL_MAX_BYTES:  # the listing said less than what came
        raise ValueError(f"{path.stat().st_size} bytes, over {limits.THUMBNAIL_MAX_BYTES}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path, formats=["PNG", "JPEG", "WEBP"]) as image:  # reads the header only
            width, height = image.size
            if width * height > limits.THUMBNAIL_MAX_PIXELS:
                raise ValueError(f"it declares {width}x{height} pixels, over {limits.THUMBNAIL_MAX_PIXELS}")
            image.seek(0)  # the first frame of an animation
            picture = image.convert("RGB")  # decodes
    picture.thumbnail((limits.THUMBNAIL_PX, limits.THUMBNAIL_PX))
    return picture


def can_generate(device: str, info) -> bool:
    """Whether `auto` makes pictures on this device: always on a GPU; on a CPU only for a small default image."""
    if not device.startswith("cpu"):
        return True
    return info.default_width * info.default_height * info.default_steps <= limits.THUMBNAIL_CPU_MAX_WORK


class Thumbnails:
    """One studio's card pictures: what each loaded repo's card offers, and the pictures made, in its own folder.

    Args:
        device: the studio's device (a CPU makes pictures only for a small default image, `can_generate`).
        info: the loaded pipeline's PipelineInfo as a dict, or None before one is loaded.
        generate: the studio's generate(ImageRequest) -> PIL image, in the calling session.
        adapters: the studio's list_adapters() in the calling session.
    """

    def __init__(self, device: str, info: Callable[[], dict | None], generate: Callable[[ImageRequest], object],
                 adapters: Callable[[], list[dict]]):  # fmt: skip
        self.device, self._info, self._generate, self._adapters = device, info, generate, adapters
        self._cards: dict[tuple, CardPicture] = {}  # (repo_id, revision, weight_name) -> what its card offers
        self._made: dict[tuple, Path] = {}  # key() -> the PNG
        self._tried: set[tuple] = set()  # (key(), mode) that gave no picture: not tried again
        self._making: dict[tuple, threading.Lock] = {}  # one maker per key; the others wait and reuse its picture
        self._lock = threading.Lock()
        self._folder: Path | None = None

    def note(self, source: tuple, card: CardPicture) -> None:
        """Remember what the card of `source` (repo_id, revision, weight_name) offers, read at its load."""
        with self._lock:
            self._cards[tuple(source[:3])] = card

    @staticmethod
    def key(info, adapter: dict) -> tuple:
        """Which picture: the pipeline (`info`, a PipelineInfo) and the adapter's file (a list_adapters() row)."""
        return (info.model_id, info.revision, adapter["repo_id"], adapter["revision"], adapter["weight_name"])

    def get(self, info, adapter: dict) -> Path | None:
        """The picture already made for `adapter` on the pipeline `info`, or None; makes nothing."""
        return self._made.get(self.key(info, adapter)) if info else None

    def pending(self, info, adapter: dict) -> bool:
        """Whether make() would still try for `adapter` under the current STUDIO_THUMBNAILS: no picture yet, not
        tried in vain in this mode."""
        mode = settings.current().thumbnails
        if mode == "off" or info is None:
            return False
        key = self.key(info, adapter)
        return key not in self._made and (key, mode) not in self._tried

    def request(self, adapter: dict):
        """The generation a thumbnail of `adapter` is: it alone at weight 1, the fixed seed, the pipeline's
        defaults, the card's prompt."""
        card = self._cards.get((adapter["repo_id"], adapter["revision"], adapter["weight_name"]))
        words = ", ".join(adapter.get("trigger_words", []))
        prompt = (card.prompt if card else "") or words or settings.DEFAULT_PROMPT
        return ImageRequest(prompt, {adapter["adapter_name"]: 1.0}, True, limits.THUMBNAIL_SEED)

    def make(self, adapter: dict) -> Path | None:
        """The picture of `adapter` (a row of the studio's list_adapters() in the calling session): made once per
        key, per STUDIO_THUMBNAILS; None when there is none to have. Never raises for a repo's fault."""
        mode = settings.current().thumbnails
        info = self._info()
        if mode == "off" or info is None:
            return None
        key = self.key(info, adapter)
        with self._lock:
            maker = self._making.setdefault(key, threading.Lock())
        with maker:
            if key in self._made or (key, mode) in self._tried:
                return self._made.get(key)
            picture = self._widget(adapter)
            if picture is None and mode == "auto" and can_generate(self.device, info):
                picture = self._generated(adapter)
                if picture is None:  # the adapter went meanwhile, or the request was refused: try again later
                    return None
            if picture is None:
                self._tried.add((key, mode))
                return None
            path = self._save(key, picture)
            self._made[key] = path
            return path

    def make_all(self) -> None:
        """The pictures of every adapter the calling session sees (after the defaults load: the shared ones)."""
        if self._info() is not None:
            for adapter in self._adapters():
                self.make(adapter)

    def _widget(self, adapter: dict):
        card = self._cards.get((adapter["repo_id"], adapter["revision"], adapter["weight_name"]))
        if card is None or card.widget is None:  # no widget: nothing to download
            return None
        try:
            repo = hub.open_repo(adapter["repo_id"], adapter["revision"])
            return decode(repo.file_path(card.widget))
        except Exception as exc:  # a stranger's file: whatever goes wrong, the card just has no widget picture
            log.warning("%s: no widget picture from %r: %s", adapter["repo_id"], card.widget, str(exc)[:200])
            return None

    def _generated(self, adapter: dict):
        try:
            image = self._generate(self.request(adapter))
        except StudioError as exc:
            log.info("%s: no thumbnail made: %s", adapter["repo_id"], exc)
            return None
        image = image.convert("RGB")
        image.thumbnail((limits.THUMBNAIL_PX, limits.THUMBNAIL_PX))
        return image

    def _save(self, key: tuple, picture) -> Path:
        with self._lock:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="adapter-studio-thumbnails-"))
                # the pictures are remade by the next process anyway: leave nothing behind in the temp folder
                atexit.register(shutil.rmtree, self._folder, ignore_errors=True)
        # named by a hash: no stranger's text in a file name
        path = self._folder / (hashlib.sha256(repr(key).encode()).hexdigest()[:24] + ".png")
        picture.save(path, format="PNG")
        return path
