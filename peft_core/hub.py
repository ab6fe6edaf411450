"""Repo ids, revisions, weight_name resolution, downloads and Hub errors.

Every download goes through huggingface_hub (so its cache, `HF_ENDPOINT`, `HF_TOKEN` and `revision` work as
users expect); bundled repos are read from `assets/hub` instead. Every call passes an explicit revision.
Errors are turned into `HubError`s that name the repo and say what was wrong.
"""

import contextlib
import contextvars
import functools
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from peft_core import bundled, settings
from peft_core.errors import AdapterError, HubError

REPO_ID_MAX = 96  # huggingface_hub checks each part against 96; the whole id is held to it here
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
# Pickle-based formats run code when loaded: they are listed in errors but never downloaded.
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
# A model card's metadata is a few KB; its YAML is parsed on every load and its trigger words are listed with every
# adapter, so a larger card is not read at all (the weights still load, without the card's facts).
MAX_CARD_BYTES = 256 * 1024

logger = logging.getLogger(__name__)


def check_repo_id(repo_id) -> str:
    """A Hub repo id ("org/name" or "name"), stripped; anything else is refused with the reason.

    huggingface_hub's `validate_repo_id` decides what a Hub id is (its characters, '--', '..', '.git'). The checks
    before it give the usual mistakes (a URL, a path, a pasted essay) a message of their own, and every message
    shows the id cut to 80 characters: the library's would repeat a stranger's text whole.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise HubError(f"repo id must be a Hub id like 'org/name', got {repo_id!r}")
    repo_id = repo_id.strip()
    shown = repo_id if len(repo_id) <= 80 else repo_id[:77] + "..."
    if len(repo_id) > REPO_ID_MAX:
        raise HubError(f"repo id {shown!r} is {len(repo_id)} characters; Hub ids have at most {REPO_ID_MAX}")
    if "://" in repo_id or repo_id.startswith(("www.", "hf.co", "huggingface.co")):
        raise HubError(f"repo id {shown!r} looks like a URL; give the id only, like 'org/name'")
    if ".." in repo_id:
        raise HubError(f"repo id {shown!r} contains '..'; a Hub id is 'org/name', never a path")
    if repo_id.count("/") > 1:
        raise HubError(f"repo id {shown!r} has too many '/': a Hub id is 'org/name'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(
            f"repo id {shown!r} is not a valid Hub id: use 'org/name' with letters, digits, '-', '_' or '.', "
            "no '..' or '--', not starting or ending with '-' or '.', not ending with '.git'"
        ) from None
    return repo_id


def check_revision(revision) -> str:
    if revision is None or (isinstance(revision, str) and not revision.strip()):
        return "main"
    if not isinstance(revision, str) or not REVISION_RE.match(revision.strip()) or ".." in revision:
        raise HubError(f"revision must be a branch, tag or commit sha like 'main', got {revision!r}")
    return revision.strip()


def check_filename(name: str, what: str = "weight_name") -> str:
    """A plain file name inside a repo: no absolute paths, no '..', no backslashes."""
    name = name.strip()
    path = PurePosixPath(name)
    if not name or "\\" in name or path.is_absolute() or ".." in path.parts or len(path.parts) != 1:
        raise HubError(f"{what} must be a file name in the repo like 'pytorch_lora_weights.safetensors', got {name!r}")
    return name


@dataclass(frozen=True)
class Repo:
    """One repo at one revision: bundled (read from disk) or on the Hub (read through huggingface_hub)."""

    repo_id: str
    revision: str
    local_dir: Path | None  # set for bundled repos and local folders
    # Local folders only: the admin's allowed folders (STUDIO_LOCAL_DIRS), which no file of the repo may lead out of.
    roots: tuple[Path, ...] = ()

    @property
    def bundled(self) -> bool:
        return self.local_dir is not None

    def list_files(self) -> list[str]:
        """Every file path in the repo, '/'-separated."""
        return sorted(self.file_sizes())

    def file_sizes(self) -> dict[str, int | None]:
        """Every file path with its size in bytes (None where the server does not say), from one listing."""
        if self.local_dir is not None:
            return self._local_files()
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile

        with hub_errors(self.repo_id, self.revision):
            tree = HfApi().list_repo_tree(self.repo_id, revision=self.revision, recursive=True)
            return {item.path: getattr(item, "size", None) for item in tree if isinstance(item, RepoFile)}

    def file_path(self, filename: str, force_download: bool = False) -> Path:
        """A local path to `filename`, downloaded into the Hub cache when the repo is remote."""
        if self.local_dir is not None:
            path = self.local_dir / filename
            if self.roots:
                self._check_inside(path)
            return path
        import huggingface_hub

        with hub_errors(self.repo_id, self.revision, filename), _reported(self.repo_id, filename) as tqdm_class:
            return Path(
                huggingface_hub.hf_hub_download(
                    self.repo_id, filename, revision=self.revision, force_download=force_download,
                    tqdm_class=tqdm_class,
                )
            )  # fmt: skip

    def snapshot(self, allow_patterns: list[str], force_download: bool = False) -> Path:
        """A local folder with the files matching `allow_patterns` (never pickle files)."""
        if self.local_dir is not None:
            self._local_files()  # from_pretrained reads the folder as it is: refuse links out of it first
            return self.local_dir
        import huggingface_hub

        with hub_errors(self.repo_id, self.revision), _reported(self.repo_id, None) as tqdm_class:
            return Path(
                huggingface_hub.snapshot_download(
                    self.repo_id, revision=self.revision, allow_patterns=allow_patterns, force_download=force_download,
                    tqdm_class=tqdm_class,
                )
            )  # fmt: skip

    def in_cache(self, filename: str) -> bool:
        """Whether a Hub file of this revision is in the local cache already; asks no server."""
        if self.local_dir is not None:
            return False
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(self.repo_id, filename, revision=self.revision), str)

    def card_data(self, sizes: dict[str, int | None] | None = None) -> dict:
        """The model card's YAML metadata, or {} when the repo has no card or one over MAX_CARD_BYTES (not even
        downloaded; a warning says so). `sizes`: `file_sizes()`, when the caller has it already."""
        sizes = self.file_sizes() if sizes is None else sizes
        if "README.md" not in sizes:
            return {}
        if (sizes["README.md"] or 0) > MAX_CARD_BYTES:
            return self._card_too_big(sizes["README.md"])
        from huggingface_hub import ModelCard

        path = self.file_path("README.md")
        if path.stat().st_size > MAX_CARD_BYTES:  # the Hub did not say its size
            return self._card_too_big(path.stat().st_size)
        try:
            card = ModelCard.load(path, ignore_metadata_errors=True)
        except Exception:  # a broken card must not stop the weights from loading
            return {}
        return card.data.to_dict() if card.data else {}

    def _card_too_big(self, size: int) -> dict:
        logger.warning(
            "%r (revision %r): README.md is %s bytes, over the %s read here (MAX_CARD_BYTES); its model card "
            "(trigger words, studio_defaults) is ignored",
            self.repo_id, self.revision, f"{size:,}", f"{MAX_CARD_BYTES:,}",
        )  # fmt: skip
        return {}

    def _local_files(self) -> dict[str, int]:
        """Every file of a local repo with its size. With `roots` set, a file or folder that is a link leading out
        of them (a git clone can hold a link named README.md that points at /etc/passwd) is refused, naming it."""
        files: dict[str, int] = {}
        seen: set[Path] = set()
        for dirpath, dirnames, filenames in os.walk(self.local_dir, followlinks=True):
            here = Path(dirpath)
            real = here.resolve()
            if real in seen:  # a link back to a folder already listed: stop the loop
                dirnames.clear()
                continue
            seen.add(real)
            for name in (*dirnames, *filenames):
                if self.roots and (here / name).is_symlink():
                    self._check_inside(here / name)
            for name in filenames:
                path = here / name
                if path.is_file():
                    files[path.relative_to(self.local_dir).as_posix()] = path.stat().st_size
        return files

    def _check_inside(self, path: Path) -> None:
        """Refuse `path` (inside this local repo) when it resolves outside the allowed folders."""
        shown = path.relative_to(self.local_dir).as_posix()
        try:
            target = path.resolve()
        except (OSError, RuntimeError):  # a link loop
            raise HubError(f"local folder {self.repo_id!r}: {shown!r} is a link that cannot be resolved") from None
        if not any(target == root or root in target.parents for root in self.roots):
            raise HubError(
                f"local folder {self.repo_id!r}: {shown!r} is a link that leads outside the allowed folders; links "
                f"may only point inside {', '.join(map(str, self.roots))}"
            )


def _is_local_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~"))


def open_local(path: str, revision: str) -> Repo:
    """A folder under one of the admin's allowed dirs, read as a repo; anything else is refused."""
    try:
        resolved = Path(path).expanduser().resolve()  # resolve() follows symlinks: a link cannot lead outside
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop, an unknown ~user
        raise HubError(f"local path {path[:80]!r} is not a valid path; give a Hub id like 'org/name'") from None
    allowed = settings.current().local_dirs
    if not any(resolved == root or root in resolved.parents for root in allowed):
        where = ", ".join(map(str, allowed)) if allowed else "none are configured (STUDIO_LOCAL_DIRS)"
        raise HubError(f"local path {path!r} is not allowed; give a Hub id like 'org/name'. Allowed folders: {where}")
    if not resolved.is_dir():
        raise HubError(f"local path {path!r} is not a folder")
    if revision != "main":
        raise HubError(f"local folder {path!r} has only revision 'main', not {revision!r}")
    return Repo(str(resolved), "main", resolved, roots=allowed)


def open_repo(repo_id, revision="main") -> Repo:
    """Validate the id and revision and say where the repo lives; downloads nothing."""
    if isinstance(repo_id, str) and _is_local_path(repo_id.strip()):
        return open_local(repo_id.strip(), check_revision(revision))
    repo_id = check_repo_id(repo_id)
    revision = check_revision(revision)
    local_dir = bundled.bundled_path(repo_id)
    allowed_orgs = settings.current().allowed_orgs
    if local_dir is None and allowed_orgs and repo_id.partition("/")[0] not in allowed_orgs:
        allowed = ", ".join(sorted(allowed_orgs))
        raise HubError(f"{repo_id!r} is not from an allowed organisation on this Space; allowed: {allowed}")
    if local_dir is not None and revision != bundled.BUNDLED_REVISION:
        raise HubError(
            f"{repo_id!r} is bundled with the app and has only revision {bundled.BUNDLED_REVISION!r}, not {revision!r}"
        )
    return Repo(repo_id, revision, local_dir)


def check_file_size(repo: Repo, filename: str, size: int | None, max_mb: float) -> None:
    """Refuse a file larger than the admin's cap before downloading it."""
    if size is not None and size > max_mb * 2**20:
        raise HubError(
            f"{filename!r} in {repo.repo_id!r} is {size / 2**20:,.1f} MB; this Space accepts at most {max_mb:g} MB"
        )


def check_snapshot_size(repo: Repo, sizes: dict[str, int | None], allow_patterns: list[str]) -> None:
    """Refuse a model whose files matching `allow_patterns` (what `snapshot` would fetch) add up to more than the
    admin's cap (STUDIO_MAX_MODEL_MB), before downloading any of them."""
    from huggingface_hub.utils import filter_repo_objects

    names = list(filter_repo_objects(sizes, allow_patterns=allow_patterns))  # the same matching snapshot uses
    total = sum(sizes[name] or 0 for name in names)
    max_mb = settings.current().max_model_mb
    if total > max_mb * 2**20:
        raise HubError(
            f"{repo.repo_id!r} (revision {repo.revision!r}) needs {total / 2**20:,.1f} MB in {len(names)} files; this "
            f"Space loads models of at most {max_mb:g} MB (STUDIO_MAX_MODEL_MB)"
        )


def read_healing_cache(repo: Repo, filenames: list[str], fetch, read):
    """read(fetch(False)), where fetch(force_download) returns local files of `repo` and read checks them.

    A Hub file that came from the local cache and fails read's checks (AdapterError: a disk error, a copy cut
    short, a hand edit) is fetched once more, bypassing the cache, and read again, so a broken cache heals itself
    instead of failing every later load. A file that is broken on the Hub fails the same way twice.
    """
    cached = any(repo.in_cache(name) for name in filenames)
    try:
        return read(fetch(False))
    except AdapterError as exc:
        if not cached:
            raise
        broken = exc
    try:
        fresh = fetch(True)
    except HubError as exc:
        raise HubError(f"the cached copy is broken ({broken}) and downloading it again failed: {exc}") from None
    return read(fresh)


def pick_weight_name(repo: Repo, weight_name: str, files: list[str] | None = None) -> str:
    """The safetensors file to load from `repo`.

    Empty `weight_name`: the single `.safetensors` file at the repo's top level; when there are several, the
    error lists them so the user can choose. Pickle files are never picked: they can run code when loaded.
    """
    files = repo.list_files() if files is None else files
    top = [f for f in files if "/" not in f]
    safetensors = [f for f in top if f.endswith(".safetensors")]
    pickles = [f for f in top if f.endswith(PICKLE_SUFFIXES)]
    where = f"{repo.repo_id!r} (revision {repo.revision!r})"
    if weight_name and weight_name.strip():
        weight_name = check_filename(weight_name)
        if weight_name.endswith(PICKLE_SUFFIXES):
            raise HubError(
                f"weight_name {weight_name!r} is a pickle file; only .safetensors are loaded (pickle can run code)"
            )
        if not weight_name.endswith(".safetensors"):
            raise HubError(f"weight_name {weight_name!r} is not a .safetensors file")
        if weight_name not in files:
            raise HubError(
                f"{weight_name!r} is not in {where}; its safetensors files are: {', '.join(safetensors) or 'none'}"
            )
        return weight_name
    if len(safetensors) == 1:
        return safetensors[0]
    if len(safetensors) > 1:
        raise HubError(f"{where} has several safetensors files; choose one as weight_name: {', '.join(safetensors)}")
    if pickles:
        raise HubError(
            f"{where} has only pickle weights ({', '.join(pickles)}); they are refused because unpickling can run "
            "code. Ask the author for a .safetensors file."
        )
    raise HubError(f"{where} has no .safetensors file; files: {', '.join(files[:20]) or 'none'}")


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str, filename: str | None = None):
    """Turn huggingface_hub's exceptions into HubErrors that say what went wrong with which repo."""
    from huggingface_hub import errors

    what = f"{repo_id!r} (revision {revision!r})"
    try:
        yield
    except errors.GatedRepoError:
        raise HubError(f"{what} is gated: accept its terms on the Hub and set HF_TOKEN") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"revision {revision!r} not found in {repo_id!r}{_revisions(repo_id)}") from None
    except errors.RemoteEntryNotFoundError:
        raise HubError(f"file {filename!r} not found in {what}") from None
    except errors.RepositoryNotFoundError:
        # Some mirrors answer a missing file or revision with "repository not found": name every possibility.
        if filename:
            raise HubError(f"file {filename!r} or repository {what} not found on the Hub") from None
        if revision != "main":
            if valid := _revisions(repo_id):
                raise HubError(f"revision {revision!r} not found in {repo_id!r}{valid}") from None
            raise HubError(f"repository {repo_id!r} or its revision {revision!r} not found on the Hub") from None
        raise HubError(f"repository {what} not found on the Hub (check the id, or set HF_TOKEN if private)") from None
    except errors.LocalEntryNotFoundError:
        raise HubError(f"{what}: the Hub is unreachable and the file is not in the local cache") from None
    except errors.OfflineModeIsEnabled:
        raise HubError(f"{what}: HF_HUB_OFFLINE is set and the file is not in the local cache") from None
    except errors.HfHubHTTPError as exc:
        raise HubError(f"the Hub refused {what}: {_short(exc)}") from None
    except (OSError, TimeoutError) as exc:
        raise HubError(f"{what}: the Hub is unreachable ({_short(exc)})") from None
    except Exception as exc:
        # httpx transport errors (connect, read timeout) do not share a base class with OSError, and a forced
        # download that cannot reach the Hub raises a ValueError caused by one: look down the chain.
        cause = exc
        while cause is not None and not isinstance(cause, errors.HfHubHTTPError) and not _is_transport(cause):
            cause = cause.__cause__
        if cause is None:
            raise
        if isinstance(cause, errors.HfHubHTTPError):
            raise HubError(f"the Hub refused {what}: {_short(cause)}") from None
        during = f" while downloading {filename!r}" if filename else ""
        if "Timeout" in type(cause).__name__:
            from huggingface_hub import constants

            raise HubError(
                f"{what}: the Hub did not answer within {constants.HF_HUB_DOWNLOAD_TIMEOUT:g} s{during} "
                f"({type(cause).__name__}); try again later, or raise HF_HUB_DOWNLOAD_TIMEOUT"
            ) from None
        raise HubError(f"{what}: the Hub is unreachable{during} ({type(cause).__name__}: {_short(cause)})") from None


# --- is the Hub there at all: asked once, briefly, before a load that needs it ----------------------------------

# With no Hub reachable a download sits out huggingface_hub's timeouts and retries before failing (20 s and more
# was measured); one bounded request says so at once. The answer is kept a while: a page asks on every load.
REACH_TIMEOUT_S = 2.0
REACH_MEMO_S = 15.0
_reach_lock = threading.Lock()
_reach: dict = {"endpoint": None, "at": 0.0, "why": None}


def unreachable_reason() -> str | None:
    """Why the Hub cannot be reached now ("HF_HUB_OFFLINE is set", "https://hf.co did not answer within 2 s
    (ConnectError)"), or None when it answers. One HEAD request to HF_ENDPOINT, bounded by REACH_TIMEOUT_S however
    the network fails (a name lookup is not bounded by httpx's timeout: the request runs in a thread we stop
    waiting for), its answer kept for REACH_MEMO_S."""
    import time

    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = constants.ENDPOINT
    with _reach_lock:
        if _reach["endpoint"] == endpoint and time.monotonic() - _reach["at"] < REACH_MEMO_S:
            return _reach["why"]
    answer: dict = {}

    def ask() -> None:
        try:
            get_session().head(endpoint, timeout=REACH_TIMEOUT_S)  # any HTTP answer, even 404, is a Hub there
            answer["why"] = None
        except Exception as exc:
            answer["why"] = f"{endpoint} did not answer ({type(exc).__name__}: {_short(exc)})"

    worker = threading.Thread(target=ask, daemon=True, name="hub-reachable")
    worker.start()
    worker.join(REACH_TIMEOUT_S + 0.5)
    why = answer["why"] if "why" in answer else f"{endpoint} did not answer within {REACH_TIMEOUT_S:g} s"
    with _reach_lock:
        _reach.update(endpoint=endpoint, at=time.monotonic(), why=why)
    return why


def _in_cache(repo_id: str) -> bool:
    """Whether the Hub cache holds anything of `repo_id` (huggingface_hub then falls back to it, offline)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return (Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")).is_dir()


def check_reachable(repo_id, revision="main") -> Repo:
    """`open_repo(repo_id, revision)`, refused at once, with the reason, when the repo must come from the Hub, the
    Hub cannot be reached (`unreachable_reason`) and the cache holds nothing of it: instead of a long silence
    followed by a network error. Bundled repos and local folders never ask."""
    repo = open_repo(repo_id, revision)
    if repo.bundled or _in_cache(repo.repo_id):
        return repo
    why = unreachable_reason()
    if why:
        raise HubError(
            f"{repo.repo_id!r} must come from the Hub, which is unreachable: {why}. The bundled demos and the "
            "local folders an admin allowed (STUDIO_LOCAL_DIRS) load without it"
        )
    return repo


def _is_transport(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("httpx", "httpcore"))


def _revisions(repo_id: str) -> str:
    """"; its branches: main, v2; tags: v1.0" when the repo can be listed, else "" (asked only after an error)."""
    from huggingface_hub import HfApi

    try:
        refs = HfApi().list_repo_refs(repo_id)
    except Exception:  # the repo itself is missing or private: the caller says so
        return ""
    branches = ", ".join(sorted(b.name for b in refs.branches)[:20]) or "none"
    tags = ", ".join(sorted(t.name for t in refs.tags)[:20])
    return f"; its branches: {branches}" + (f"; tags: {tags}" if tags else "")


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# --- download progress: bytes on disk out of bytes expected, for whoever shows a progress bar --------------------


@dataclass(frozen=True)
class DownloadProgress:
    """Where one Hub download stands: `Repo.file_path` (one file) or `Repo.snapshot` (several, added up)."""

    repo_id: str
    filename: str | None  # None for a snapshot
    done: int  # bytes on disk so far
    total: int  # bytes expected, 0 while unknown; a snapshot's grows as each of its files starts
    finished: bool = False  # the last report: every file is on disk (total 0: all came from the cache)

    @property
    def what(self) -> str:
        return f"{self.repo_id}/{self.filename}" if self.filename else self.repo_id


# Who is waiting for the bytes of the downloads started in this thread (or asyncio task): one sink per request,
# so two users loading at once each see their own bar. The loading code in between never has to pass it along.
_SINK: contextvars.ContextVar[Callable[[DownloadProgress], None] | None] = contextvars.ContextVar(
    "download_progress_sink", default=None
)


@contextlib.contextmanager
def report_downloads(sink: Callable[[DownloadProgress], None]):
    """Send a `DownloadProgress` to `sink` as each Hub download made inside the block advances.

    Bundled repos and local folders download nothing and report nothing; a file found in the cache reports only
    `finished`. `sink` may be called from huggingface_hub's worker threads (snapshots fetch files in parallel).
    """
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


@contextlib.contextmanager
def _reported(repo_id: str, filename: str | None):
    """The `tqdm_class` for one download: None (huggingface_hub's own console bars) when nobody is listening."""
    sink = _SINK.get()
    if sink is None:
        yield None
        return
    counter = _ByteCounter(sink, repo_id, filename)
    yield counter.bar_class()
    counter.report(finished=True)  # only reached when the download succeeded


class _ByteCounter:
    """The bytes of one download, from the bars huggingface_hub makes with the `tqdm_class` we pass (`bar_class`):
    the byte bars ("B") are forwarded to the sink as one DownloadProgress (the file-count bar of a snapshot is not).

    hf_hub_download makes one byte bar; snapshot_download makes two that add up all its files, one for the bytes
    received and one for the bytes written, which differ when Xet deduplicates. The bar expecting the most bytes
    is reported: the bytes written, which end at the size of the files.
    """

    def __init__(self, sink: Callable[[DownloadProgress], None], repo_id: str, filename: str | None):
        self.sink, self.repo_id, self.filename = sink, repo_id, filename
        self.bars: list = []
        self.lock = threading.Lock()
        self.last: tuple | None = None

    def report(self, finished: bool = False) -> None:
        with self.lock:
            bar = max(self.bars, key=lambda b: (b.total or 0, b.n), default=None)
            total = int(bar.total or 0) if bar else 0
            done = int(bar.n) if bar else 0
            done = min(done, total) if total else done
            if finished:
                done = total = max(done, total)
            state = (done, total, finished)
            if state == self.last:
                return
            self.last = state
        self.sink(DownloadProgress(self.repo_id, self.filename, done, total, finished))

    def bar_class(self) -> type:
        """A tqdm class whose bars report to this counter."""
        return type("ReportedBar", (_reported_bar(),), {"counter": self})


@functools.cache
def _reported_bar() -> type:
    """huggingface_hub's own tqdm, made to draw nothing and to send its count to `counter` (a _ByteCounter).

    A real tqdm (the class huggingface_hub draws its bars with), so every method it calls on a bar exists. Disabled,
    tqdm keeps `n` at `initial` and draws nothing: `update` counts here, and `refresh` (which huggingface_hub calls
    after changing a bar's `total`) reports.
    """
    from huggingface_hub.utils import tqdm

    class ReportedBar(tqdm):
        counter: _ByteCounter

        def __init__(self, *args, unit="it", **kwargs):
            self.counts_bytes = unit == "B"  # (not `unit`: a disabled tqdm without one answers format_dict simply)
            super().__init__(*args, unit=unit, **{**kwargs, "disable": True})
            if self.counts_bytes:
                self.counter.bars.append(self)
                self.counter.report()

        def update(self, n=1):
            self.n += n or 0
            self.refresh()

        def refresh(self, *args, **kwargs):
            if self.counts_bytes:
                self.counter.report()

    return ReportedBar
