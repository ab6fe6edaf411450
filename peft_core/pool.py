"""The resident adapters of one studio and their facts, least recently used first, and the rules both sides share:
which adapter may go when the resident cap is reached, and whether a base may be (re)loaded under the admin's lock.

A pool holds records only (an image LoRA's `AdapterInfo`, a text adapter's `TextAdapterInfo`, anything with
`to_dict()`); the weights live in the pipeline or the model, and the studio that owns the pool changes both under
its own lock. Every method here checks before it changes anything, so a refusal leaves the pool as it was.
"""

from dataclasses import dataclass, field

from peft_core import limits, settings
from peft_core.errors import InputError


@dataclass
class Entry:
    info: object  # the record listed to users (has to_dict())
    reloadable: bool  # can be loaded again from where it came from: only such an adapter is evicted silently
    last_used: int = 0  # the pool's request counter when it was last used


@dataclass
class AdapterPool:
    """Resident adapters by name, in load order."""

    entries: dict[str, Entry] = field(default_factory=dict)
    _requests: int = 0

    def __contains__(self, adapter_name) -> bool:
        return adapter_name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def names(self) -> list[str]:
        return list(self.entries)

    def get(self, adapter_name):
        """The record of `adapter_name`, or a refusal naming what is loaded."""
        if adapter_name not in self.entries:
            raise InputError(f"no adapter named {adapter_name!r}; loaded: {', '.join(self.entries) or 'none'}")
        return self.entries[adapter_name].info

    def records(self) -> list:
        return [entry.info for entry in self.entries.values()]

    def list(self) -> list[dict]:
        return [entry.info.to_dict() for entry in self.entries.values()]

    # --- checks, before anything changes -----------------------------------------------------------------------------

    def check_loaded(self, names) -> None:
        limits.check_loaded(names, self.entries)

    def check_free(self, adapter_name: str) -> None:
        limits.check_free(adapter_name, self.entries)

    def free_name(self, repo_id: str) -> str:
        """A name derived from `repo_id` that no resident adapter has ("style", then "style_2" ...)."""
        return limits.derive_adapter_name(repo_id, self.entries)

    def eviction_candidate(self, in_use=()) -> str | None:
        """The adapter to drop so one more fits under STUDIO_MAX_RESIDENT_ADAPTERS: the least recently used one that
        can be loaded again and is not in `in_use`; None while there is room. Raises when none may go."""
        cap = settings.current().max_resident_adapters
        if len(self.entries) < cap:
            return None
        in_use = set(in_use)
        candidates = [
            name
            for name, entry in sorted(self.entries.items(), key=lambda item: item[1].last_used)
            if entry.reloadable and name not in in_use
        ]
        if not candidates:
            raise InputError(
                f"{len(self.entries)} adapters are loaded, the most this Space keeps ({cap}), and each is bundled, "
                "in use or made here; delete one first"
            )
        return candidates[0]

    # --- changes ---------------------------------------------------------------------------------------------------

    def add(self, adapter_name: str, info, reloadable: bool) -> None:
        self.entries[adapter_name] = Entry(info, reloadable)

    def remove(self, adapter_name: str) -> None:
        del self.entries[adapter_name]

    def clear(self) -> None:
        self.entries.clear()

    def touch(self, names) -> None:
        """Mark `names` as used by one more request (for the least-recently-used order)."""
        self._requests += 1
        for name in names:
            if name in self.entries:
                self.entries[name].last_used = self._requests


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
