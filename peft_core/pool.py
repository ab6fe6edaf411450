"""The resident adapters of one studio, the names each session gives them, and the rules both sides share: which
adapter may go when the resident cap is reached, and whether a base may be (re)loaded.

Two layers (docs/SESSIONS.md):

- *Residents*, by an internal key: one record (an image LoRA's `AdapterInfo`, a text adapter's
  `TextAdapterInfo`, anything with `to_dict()`) per set of weights the pipeline or model holds. The same
  (repo, revision, file) is resident once, whichever sessions loaded it: `find(source)` says which.
- *Names*, per session (peft_core/sessions.py): session -> {adapter_name: key}. The admin's names (no session:
  scripts, tests, the defaults) are shared, seen by every session and read-only to them. A visitor sees the shared
  names and their own; another session's names answer "not loaded in this session", as names never loaded do.

Every method here that takes a name reads it in the calling session (sessions.current()). A resident that no name
references any more is handed back to the studio to free at once. The weights live in the pipeline or the model,
and the studio that owns the pool changes both under its own lock. Every method checks before it changes
anything, so a refusal leaves the pool as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peft_core import limits, sessions, settings
from peft_core.errors import InputError

SHARED = sessions.ADMIN  # the namespace of the admin's adapters, seen by every session


@dataclass
class Entry:
    info: object  # the record listed to users (has to_dict()); its adapter_name is the first name it was given
    reloadable: bool  # can be loaded again from where it came from: only such an adapter is evicted silently
    source: tuple | None = None  # (repo_id, revision, file) it was read from; None: made here (never shared)
    file_bytes: int | None = None  # the file's size as published: a load that shares it still meets the size cap
    last_used: int = 0  # the pool's request counter when it was last used


@dataclass
class AdapterPool:
    """Resident adapters by key, in load order, and each session's names for them."""

    entries: dict[str, Entry] = field(default_factory=dict)
    spaces: dict = field(default_factory=dict)  # session (SHARED: the admin) -> {adapter_name: key}, load order
    _sources: dict = field(default_factory=dict)  # source -> key, for sharing
    _requests: int = 0

    # --- what the calling session sees ---------------------------------------------------------------------------

    def visible(self) -> dict[str, str]:
        """adapter_name -> key of every adapter the calling session may use: the shared ones, then its own."""
        session = sessions.current()
        shared = self.spaces.get(SHARED, {})
        return dict(shared) if session is SHARED else {**shared, **self.spaces.get(session, {})}

    def own(self, session=None) -> dict[str, str]:
        """The names the calling session (or `session`) gave, which it may delete."""
        return dict(self.spaces.get(sessions.current() if session is None else session, {}))

    def __contains__(self, adapter_name) -> bool:
        return adapter_name in self.visible()

    def __len__(self) -> int:
        """How many adapters the pipeline or model holds (for every session)."""
        return len(self.entries)

    def names(self) -> list[str]:
        return list(self.visible())

    def key(self, adapter_name: str) -> str:
        """The resident key of `adapter_name` in this session, or a refusal naming what it may use."""
        visible = self.visible()
        if adapter_name not in visible:
            raise InputError(f"no adapter named {adapter_name!r}{_here()}; loaded: {', '.join(visible) or 'none'}")
        return visible[adapter_name]

    def keys(self, names) -> list[str]:
        """The resident keys of `names` (checked), once each, in order."""
        self.check_loaded(names)
        visible = self.visible()
        return list(dict.fromkeys(visible[name] for name in names))

    def mix(self, mix: dict) -> dict:
        """A mix by name ({"style": 0.8}) as a mix by resident key. Two names for one resident (loaded twice)
        add their weights: a LoRA's effect is linear in its weight, so this is what the two would do."""
        self.check_loaded(mix)
        visible, by_key = self.visible(), {}
        for name, weight in mix.items():
            key = visible[name]
            by_key[key] = by_key.get(key, 0.0) + weight
        return by_key

    def get(self, adapter_name):
        """The record of `adapter_name`, or a refusal naming what this session may use."""
        return self.entries[self.key(adapter_name)].info

    def records(self) -> list:
        """Every resident record, whichever session holds it (what the model holds)."""
        return [entry.info for entry in self.entries.values()]

    def list(self) -> list[dict]:
        """This session's view: the shared adapters, then its own, each under the name it has here."""
        visitor = not sessions.is_admin()
        own = self.own() if visitor else {}
        listed = []
        for name, key in self.visible().items():
            row = {**self.entries[key].info.to_dict(), "adapter_name": name}
            if visitor:
                row["shared"] = name not in own
            listed.append(row)
        return listed

    def held(self, session) -> tuple[int, float]:
        """(adapters, megabytes) the names of `session` hold, for its quotas."""
        own = self.spaces.get(session, {})
        return len(own), sum(size_mb(self.entries[key].info) for key in own.values())

    # --- checks, before anything changes -----------------------------------------------------------------------------

    def check_loaded(self, names) -> None:
        visible = self.visible()
        missing = ", ".join(repr(name) for name in names if name not in visible)
        if missing:
            raise InputError(f"adapter(s) {missing} not loaded{_here()}; loaded: {', '.join(visible) or 'none'}")

    def check_free(self, adapter_name: str) -> None:
        limits.check_free(adapter_name, self.visible())

    def check_own(self, adapter_name: str, action: str = "change or delete") -> str:
        """The key of `adapter_name` if this session may `action` it: a shared one is read-only to visitors."""
        key = self.key(adapter_name)
        if adapter_name not in self.own():
            raise InputError(
                f"adapter {adapter_name!r} is shared by this Space (bundled or the admin's): a session may "
                f"{action} only its own adapters; load or make your own under another name"
            )
        return key

    def free_name(self, repo_id: str) -> str:
        """A name derived from `repo_id` that this session does not use yet ("style", then "style_2" ...)."""
        return limits.derive_adapter_name(repo_id, self.visible())

    def new_key(self, adapter_name: str) -> str:
        """A resident key for new weights: the name itself while no resident has it (so a script's adapter
        "style" sits in the pipeline as "style"), else "style_2" ..."""
        key, n = adapter_name, 2
        while key in self.entries:
            key, n = f"{adapter_name[: limits.ADAPTER_NAME_MAX - 4]}_{n}", n + 1
        return key

    def find(self, source: tuple) -> str | None:
        """The key of the resident read from `source` (repo_id, revision, file), or None."""
        return self._sources.get(source)

    def eviction_candidate(self, in_use=()) -> str | None:
        """The resident key to drop so one more fits under STUDIO_MAX_RESIDENT_ADAPTERS: the least recently used
        one that can be loaded again and is not in `in_use`; None while there is room. Raises when none may go."""
        cap = settings.current().max_resident_adapters
        if len(self.entries) < cap:
            return None
        in_use = set(in_use)
        candidates = [
            key
            for key, entry in sorted(self.entries.items(), key=lambda item: item[1].last_used)
            if entry.reloadable and key not in in_use
        ]
        if not candidates:
            raise InputError(
                f"{len(self.entries)} adapters are loaded, the most this Space keeps ({cap}), and each is bundled, "
                "in use or made here; delete one first"
            )
        return candidates[0]

    # --- changes ---------------------------------------------------------------------------------------------------

    def add(self, adapter_name: str, info, reloadable: bool, key: str | None = None, source=None,
            file_bytes: int | None = None) -> None:  # fmt: skip
        """Name `key` (default: `adapter_name`) `adapter_name` in this session; new weights need `info`."""
        key = adapter_name if key is None else key
        if key not in self.entries:
            self.entries[key] = Entry(info, reloadable, source, file_bytes)
            for alias in _aliases(source):
                self._sources[alias] = key
        self.spaces.setdefault(sessions.current(), {})[adapter_name] = key

    def remove(self, adapter_name: str) -> str | None:
        """Drop this session's name; returns the key when no name references it any more (free its weights)."""
        key = self.check_own(adapter_name)
        space = sessions.current()
        del self.spaces[space][adapter_name]
        if not self.spaces[space]:
            del self.spaces[space]
        return self._drop_if_unreferenced(key)

    def remove_key(self, key: str) -> None:
        """Drop a resident and every name for it (evicted, or its weights freed)."""
        for space in list(self.spaces):
            names = self.spaces[space]
            for name in [n for n, k in names.items() if k == key]:
                del names[name]
            if not names:
                del self.spaces[space]
        entry = self.entries.pop(key, None)
        for alias in _aliases(entry.source if entry else None):
            if self._sources.get(alias) == key:
                del self._sources[alias]

    def release(self, session) -> list[str]:
        """Drop every name of `session`; returns the keys nothing references any more (free their weights)."""
        names = self.spaces.pop(session, {})
        return [key for key in dict.fromkeys(names.values()) if self._drop_if_unreferenced(key)]

    def _drop_if_unreferenced(self, key: str) -> str | None:
        if any(key in names.values() for names in self.spaces.values()):
            return None
        self.remove_key(key)
        return key

    def clear(self) -> None:
        self.entries.clear()
        self.spaces.clear()
        self._sources.clear()

    def touch(self, keys) -> None:
        """Mark resident `keys` as used by one more request (for the least-recently-used order)."""
        self._requests += 1
        for key in keys:
            if key in self.entries:
                self.entries[key].last_used = self._requests


def size_mb(info) -> float:
    """An adapter's megabytes, for the session quota: an image LoRA's file size, a text adapter's parameters (at
    4 bytes each: what they hold in float32)."""
    size = getattr(info, "size_mb", None)
    if size is None:
        size = (getattr(info, "num_parameters", 0) or 0) * 4 / 2**20
    return float(size)


def _here() -> str:
    return "" if sessions.is_admin() else " in this session"


def _aliases(source) -> list:
    """The lookups that find a resident read from `source`: (repo, revision, file), and (repo, revision, "") when
    the file was picked from the repo rather than named (the source's 4th field says so)."""
    if source is None:
        return []
    aliases = [tuple(source[:3])]
    if len(source) > 3 and source[3]:
        aliases.append((source[0], source[1], ""))
    return aliases


def check_base_lock(loaded: tuple[str, str] | None, repo) -> bool:
    """Under STUDIO_LOCK_BASE, with `loaded` = (model_id, revision) of the base in place: refuse another base, and
    say True for the same one (nothing to load: a reload would drop every adapter, a wipe any visitor could do).
    False when there is no lock or no base yet: load it."""
    if loaded is None or not settings.current().lock_base:
        return False
    if (repo.repo_id, repo.revision) == loaded:
        return True
    raise InputError(
        f"this Space is locked to the base {loaded[0]!r} (STUDIO_LOCK_BASE); {repo.repo_id!r} "
        f"(revision {repo.revision!r}) cannot replace it"
    )


def check_base_change(loaded: tuple[str, str] | None, repo, what: str) -> bool:
    """Public mode (STUDIO_PUBLIC, or a Space): a visitor may not replace the base `what` ("base pipeline", "text
    model"), and the admin only with one of STUDIO_BASES when set. True when `repo` is the base in place (nothing
    to load); False: load it. Locally (not public) anyone may; check_base_lock still applies."""
    config = settings.current()
    if not config.public:
        return False
    same = loaded is not None and (repo.repo_id, repo.revision) == loaded
    if not sessions.is_admin():
        if same:
            return True
        raise InputError(
            f"this Space is public: visitors cannot replace the {what} ({loaded[0] if loaded else 'none'!r} is "
            f"loaded; {repo.repo_id!r} was asked for); the admin chooses it"
            + (f" among STUDIO_BASES: {', '.join(config.bases)}" if config.bases else "")
            + ". Load adapters onto the one in place instead"
        )
    if config.bases and repo.repo_id not in config.bases:
        raise InputError(
            f"{repo.repo_id!r} is not one of the bases this Space allows (STUDIO_BASES): {', '.join(config.bases)}"
        )
    return same
