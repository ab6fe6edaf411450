"""A real Hugging Face Hub stand-in for tests: an offline `olah` server on loopback serving local git repos.

Why olah: it speaks the Hub's HTTP API (``/api/models/<repo>/revision/<rev>``, ``/<repo>/resolve/<rev>/<file>``,
tree / paths-info / refs), so huggingface_hub, transformers, diffusers and peft download through their real code
paths. With ``[accessibility] offline = true`` and ``mirrors-path`` set, olah answers every request for
``<mirrors>/models/<org>/<name>`` straight from that git repo and never talks to huggingface.co.

What olah needs (read from olah/mirror/repos.py and olah/server_mirror.py, olah 0.5.4):

* a normal (non-bare is fine) git repo at ``<mirrors>/models/<org>/<name>``; revisions are resolved with
  ``repo.commit(rev)``, so branch names, tag names and full commit shas all work;
* files as plain git blobs, read whole into memory; no size limit of its own. Blobs of 121-149 bytes are checked
  for being git-lfs pointers (then olah reads ``.git/lfs/objects``). We commit with the user's and system git
  config off, so a copied ``.gitattributes`` with ``filter=lfs`` still yields plain blobs: no LFS anywhere.

Quirks (olah 0.5.4 offline + mirror) and what callers see from huggingface_hub:

* ``/api/models/<repo>`` *without* a revision: olah takes the newest commit from its upstream cache, never from
  the mirror, so it would answer 401. add_repo seeds that cache with main (see _seed_latest_commit), so
  model_info(repo), repo_exists and libraries that omit the revision work as against the Hub.
* whatever the mirror cannot answer falls through to olah's upstream path, which offline answers 401
  ``X-Error-Code: RepoNotFound``: an unknown repo, an unknown file at a branch, and an unknown branch all raise
  ``RepositoryNotFoundError`` (not EntryNotFound / RevisionNotFound). An unknown file at a full commit sha is a
  proper 404 ``RemoteEntryNotFoundError``.
* a full sha the git repo lacks makes olah fail (500, or a dropped connection on /api); huggingface_hub retries
  a 500 for ~23 s before raising. Tests should not ask for made-up shas.
* ``model_info(..., files_metadata=True)`` has no sizes (``siblings[i].size is None``); ``list_repo_tree`` and
  ``get_paths_info`` have them. ``list_repo_commits`` fails (KeyError 'user' in huggingface_hub). ``GET /`` is a 500.
* a repo name equal to an API word (``tree``, ``resolve``, ``revision``, ``refs``, ...) confuses olah's routes.

huggingface_hub reads ``HF_ENDPOINT``/``HF_HOME`` once, at import, into ``huggingface_hub.constants`` (and the
module-level ``HfApi`` behind ``list_repo_files``/``model_info`` copies the endpoint when it is built), so setting
the env var in a test is not enough once it is imported: ``use_endpoint`` patches those copies and undoes it.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

# A folder to copy, or repo path -> content (bytes, text, or a local file to copy).
Files = Mapping[str, bytes | str | Path] | Path | str

# git must not pick up the user's or system config (signing, hooks, lfs filters) nor need an identity.
_GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "hubserver",
    "GIT_AUTHOR_EMAIL": "hubserver@localhost",
    "GIT_COMMITTER_NAME": "hubserver",
    "GIT_COMMITTER_EMAIL": "hubserver@localhost",
}


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV}
    out = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _write_tree(dest: Path, files: Files) -> None:
    """Fill `dest` from a folder (copied) or a mapping of repo path -> bytes / text / local file."""
    if isinstance(files, (str, Path)):
        shutil.copytree(files, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git"))
        return
    for rel, content in files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        elif isinstance(content, str):
            target.write_text(content)
        else:
            target.write_bytes(content)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _olah_command() -> list[str]:
    # Prefer the console script next to this interpreter, so olah runs in the tests' environment
    # (a pyenv shim on PATH adds start-up time and may resolve to another Python).
    script = Path(sys.executable).parent / "olah-cli"
    if script.exists():
        return [str(script)]
    found = shutil.which("olah-cli")
    if found:
        return [found]
    return [sys.executable, "-c", "from olah.server import cli; cli()"]


class HubServer:
    """A real olah server on 127.0.0.1:<free port> serving git repos made from local folders."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.mirrors = self.root / "mirrors"
        self.endpoint = ""
        # repo_id -> {revision name: commit sha}, for tests that pin `revision=<sha>`.
        self.shas: dict[str, dict[str, str]] = {}
        self._proc: subprocess.Popen | None = None
        self._log = self.root / "olah.log"

    # -- repos -------------------------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: Files, revisions: Mapping[str, Files] | None = None) -> str:
        """Create model repo `repo_id` with `files` on branch "main" and each of `revisions` on its own branch.

        Each revision's content is that branch's whole tree (the branch starts from main). Calling it again for
        the same repo replaces the content with new commits on top, like a push: earlier shas stay downloadable.
        Works before or after start(): olah opens the git repo on every request. Returns main's commit sha.
        """
        if repo_id.count("/") != 1:
            raise ValueError(f"repo_id must be '<org>/<name>', got {repo_id!r}")  # olah's mirror layout needs an org
        repo = self.mirrors / "models" / repo_id
        if not (repo / ".git").exists():
            repo.mkdir(parents=True)
            _git(repo, "init", "-q", "-b", "main")
        shas = {"main": self._commit(repo, "main", files)}
        for name, content in (revisions or {}).items():
            _git(repo, "checkout", "-q", "-B", name, "main")  # -B: (re)start the branch at main
            shas[name] = self._commit(repo, name, content)
        _git(repo, "checkout", "-q", "main")
        self.shas[repo_id] = shas
        self._seed_latest_commit(repo_id, shas["main"])
        return shas["main"]

    @staticmethod
    def _commit(repo: Path, branch: str, files: Files) -> str:
        """Make `files` the whole tree of the checked-out `branch` and commit."""
        _git(repo, "rm", "-rq", "--ignore-unmatch", ".")
        _write_tree(repo, files)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", f"update {branch}")
        return _git(repo, "rev-parse", "HEAD")

    def _seed_latest_commit(self, repo_id: str, sha: str) -> None:
        """Make `/api/models/<repo>` (no revision) answer with main, as the Hub does.

        Offline, olah takes a repo's newest commit from revision metadata in its cache folder
        (repos-path/api/models/<repo>/revision/*/meta_head.json, newest lastModified wins) and never from the
        mirror, so without this file the call answers 401 RepoNotFound. olah accepts a plain RepoMeta document
        there (`{"sha", "lastModified"}`, see olah.utils.repo_utils._load_meta_head_object).
        """
        api_dir = self.root / "cache" / "api" / "models" / repo_id
        shutil.rmtree(api_dir, ignore_errors=True)
        meta = api_dir / "revision" / "main" / "meta_head.json"
        meta.parent.mkdir(parents=True)
        meta.write_text(json.dumps({"sha": sha, "lastModified": datetime.now(UTC).isoformat()}))

    # -- server ------------------------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> str:
        """Start olah and wait until it answers HTTP; returns the endpoint. Retries on a port taken meanwhile."""
        if self._proc is not None:
            return self.endpoint
        self.mirrors.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            port = _free_port()
            config = self.root / "olah.toml"
            config.write_text(
                "[basic]\n"
                'host = "127.0.0.1"\n'
                f"port = {port}\n"
                f"repos-path = {json.dumps(str(self.root / 'cache'))}\n"  # JSON strings are valid TOML strings
                f"mirrors-path = [{json.dumps(str(self.mirrors))}]\n"
                "metadata-cache-ttl = 0\n"
                "[accessibility]\n"
                "offline = true\n"
            )
            with open(self._log, "wb") as log:
                # --log-path: olah otherwise writes ./logs into the current directory.
                self._proc = subprocess.Popen(
                    [*_olah_command(), "-c", str(config), "--log-path", str(self.root / "logs")],
                    cwd=self.root,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            self.endpoint = f"http://127.0.0.1:{port}"
            if self._wait_ready(timeout):
                return self.endpoint
            code = self._proc.poll()
            why = f"exited with code {code}" if code is not None else f"did not answer within {timeout}s"
            tail = self.log_tail()
            self.stop()
            # Another process may grab the free port between _free_port() and olah's bind: try a new one.
            if "address already in use" not in tail.lower():
                break
        raise RuntimeError(f"olah ({' '.join(_olah_command())}) {why} at {self.endpoint}; log {self._log}:\n{tail}")

    def _wait_ready(self, timeout: float) -> bool:
        # Any HTTP answer means uvicorn is serving. Not "/": olah 0.5.4's index page fails (500, a traceback in
        # the log) with this starlette; a metadata call for a repo that doesn't exist answers 401 cheaply.
        # No proxies: loopback must be reached directly.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        probe = self.endpoint + "/api/models/hubserver/ready/revision/main"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with opener.open(probe, timeout=2):
                    return True
            except urllib.error.HTTPError:
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate olah and wait for it; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> "HubServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# Libraries whose modules may hold import-time copies of huggingface_hub constants
# (e.g. diffusers: `from huggingface_hub.constants import HF_HUB_OFFLINE`, HUGGINGFACE_CO_RESOLVE_ENDPOINT).
_PATCHED_PACKAGES = ("huggingface_hub", "transformers", "diffusers", "peft")


def _hub_settings(endpoint: str, hf_home: Path, offline: bool, timeout: int) -> dict[str, object]:
    """New values for huggingface_hub.constants, keyed by constant name (mirrors constants.py)."""
    from huggingface_hub import constants

    hub_cache = str(hf_home / "hub")
    assets = str(hf_home / "assets")
    return {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        # hosts whose redirects may be followed with the auth header
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {urlsplit(endpoint).hostname},
        "HF_HOME": str(hf_home),
        "default_cache_path": hub_cache,
        "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HF_HUB_CACHE": hub_cache,
        "default_assets_cache_path": assets,
        "HUGGINGFACE_ASSETS_CACHE": assets,
        "HF_ASSETS_CACHE": assets,
        # no token from the developer's real HF_HOME is sent to (or needed by) the test server
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_OFFLINE": offline,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_ETAG_TIMEOUT": timeout,
        "HF_HUB_DOWNLOAD_TIMEOUT": timeout,
    }


@contextlib.contextmanager
def use_endpoint(endpoint: str, hf_home: Path, offline: bool = False, timeout: int = 5) -> Iterator[None]:
    """Point huggingface_hub (and transformers / diffusers / peft on top of it) at `endpoint` with a cache in
    `hf_home`, even if they are already imported; undo everything on exit. Nests.

    * env vars, for code that reads them late (peft reads HF_HUB_OFFLINE from os.environ) and for subprocesses;
    * huggingface_hub.constants, which huggingface_hub itself reads at call time;
    * module-level copies of those constants in already-imported modules of the libraries above (diffusers:
      `from huggingface_hub.constants import HF_HUB_OFFLINE`), matched by name and by still holding the value
      huggingface_hub.constants had;
    * HfApi objects, which copy the endpoint into `.endpoint` when built: huggingface_hub.hf_api.api (behind
      `list_repo_files`, `model_info`, ...) and transformers.utils.hub._hf_api. Ones built inside the block are
      pointed back at the previous endpoint on exit, so they don't keep calling a stopped server.

    `offline=True` gives HF_HUB_OFFLINE semantics (cache only, no HTTP at all) the same way.
    """
    from huggingface_hub import HfApi, constants

    hf_home = Path(hf_home)
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "TRANSFORMERS_OFFLINE": "1" if offline else "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": str(timeout),
        "HF_HUB_DOWNLOAD_TIMEOUT": str(timeout),
    }
    new = _hub_settings(endpoint, hf_home, offline, timeout)
    old = {name: getattr(constants, name) for name in new}
    undo: list[tuple[object, str, object]] = []  # (object, attribute, previous value), replayed backwards

    def patch(obj: object, attr: str, value: object) -> None:
        undo.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    saved_env = {key: os.environ.get(key) for key in env}
    try:
        os.environ.update(env)
        for module, name, value in _library_globals():
            if module is constants:
                continue
            if name in new and _same(value, old[name]):
                patch(module, name, new[name])
            elif name == "HUGGINGFACE_CO_RESOLVE_ENDPOINT" and value == old["ENDPOINT"]:
                patch(module, name, endpoint)  # diffusers' own copy of HF_ENDPOINT
            elif isinstance(value, HfApi) and value.endpoint == old["ENDPOINT"]:
                patch(value, "endpoint", endpoint)
        for name, value in new.items():
            patch(constants, name, value)
        yield
    finally:
        for obj, attr, value in reversed(undo):
            setattr(obj, attr, value)
        for _module, _name, value in _library_globals():
            if isinstance(value, HfApi) and value.endpoint == endpoint:
                value.endpoint = old["ENDPOINT"]  # built inside the block (e.g. transformers' lazy _hf_api)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _library_globals() -> Iterator[tuple[object, str, object]]:
    """(module, name, value) for the globals of every imported module of _PATCHED_PACKAGES."""
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] in _PATCHED_PACKAGES and module is not None:
            for name, value in list(vars(module).items()):
                yield module, name, value


def _same(a: object, b: object) -> bool:
    # bools and ints compare equal (True == 1): only treat same-typed equal values as copies
    return type(a) is type(b) and a == b


@contextlib.contextmanager
def running_hub(root: Path) -> Iterator[HubServer]:
    """A started HubServer under `root`, with huggingface_hub pointed at it and HF_HOME in `root`/hf_home."""
    server = HubServer(Path(root) / "server")
    try:
        server.start()
        with use_endpoint(server.endpoint, Path(root) / "hf_home"):
            yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """A started HubServer for the whole session, with huggingface_hub pointed at it and a fresh HF_HOME.

    Use from a conftest with `from tests.hubserver import hub_server  # noqa: F401`; add repos with
    `hub_server.add_repo(...)` (served at once, no restart needed).
    """
    with running_hub(tmp_path_factory.mktemp("hub")) as server:
        yield server
