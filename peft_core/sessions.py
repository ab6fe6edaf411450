"""Whose request this is: the visitor's session, bound around each call by the UI's wrappers, and what each
session may still do (its quotas), and when it ends.

Every browser tab and every gradio_client `Client` is a session (gradio's `session_hash`). The wrappers in
ui/common.py bind it with `bound(session)` around the core's call (and around each step of a streamed one: gradio
may run the steps of a generator in different threads, and a context variable does not follow). The studios read
it with `current()`. Outside the app (scripts, tests, the defaults loaded at start) nothing is bound: that is the
admin, whose adapters are shared with every session, read-only to them (pool.py).

One `Quotas` per app counts each session's downloads and training steps; it is handed to both studios when they are
built (app.py), so the counts cover both sides. A `Tracker` per app remembers when each session was last seen, and
releases the adapters of a session that ended (gradio's unload) or went idle (STUDIO_SESSION_IDLE_S) in every studio,
which also forget its counts.
"""

import contextlib
import contextvars
import threading
import time
from collections import deque

from peft_core import settings
from peft_core.errors import InputError

ADMIN = None  # the session of a call with none bound: scripts, tests, the defaults; its adapters are shared
_session: contextvars.ContextVar[str | None] = contextvars.ContextVar("studio_session", default=ADMIN)


def current() -> str | None:
    """The session of the running call; ADMIN (None) outside the app."""
    return _session.get()


def is_admin() -> bool:
    return _session.get() is ADMIN


@contextlib.contextmanager
def bound(session: str | None):
    """Run the block as `session` (None: as the admin)."""
    token = _session.set(session)
    try:
        yield
    finally:
        _session.reset(token)


def prefix(session: str | None) -> str:
    """The first characters of a session hash, for a log line: enough to follow one visitor, not to act as one."""
    return "admin" if session is None else str(session)[:6]


# --- quotas ----------------------------------------------------------------------------------------------------------


class Quotas:
    """Per-session counters: downloads in the last minute and training steps in all. The adapters a session holds
    and their megabytes are counted from the pool itself (pool.py), so they can never drift from it. A studio gets
    one when it is built (`ImageStudio(quotas=...)`, `TextStudio(quotas=...)`); studios given the same one count a
    session's use on both sides together."""

    def __init__(self):
        self._lock = threading.Lock()
        self._downloads: dict[str, deque] = {}
        self._train_steps: dict[str, int] = {}

    def check_download(self, session: str | None) -> None:
        """Refuse a load that may download when `session` made its quota of them in the last minute."""
        if session is ADMIN:
            return
        cap = settings.current().session_downloads_per_minute
        with self._lock:
            recent = self._recent(session)
            if len(recent) >= cap:
                wait = 60 - (time.monotonic() - recent[0])
                raise InputError(
                    f"this session made {len(recent)} downloads in the last minute, its quota "
                    f"(STUDIO_SESSION_DOWNLOADS_PER_MINUTE={cap}); try again in {max(1, round(wait))} s"
                )

    def count_download(self, session: str | None) -> None:
        if session is not ADMIN:
            with self._lock:
                self._recent(session).append(time.monotonic())

    def _recent(self, session: str) -> deque:
        recent = self._downloads.setdefault(session, deque())
        while recent and time.monotonic() - recent[0] > 60:
            recent.popleft()
        return recent

    def check_train_steps(self, session: str | None, steps: int) -> None:
        if session is ADMIN:
            return
        cap = settings.current().session_train_steps
        with self._lock:
            done = self._train_steps.get(session, 0)
        if done + steps > cap:
            raise InputError(
                f"training {steps} steps would make this session's {done + steps}; its quota is {cap} "
                f"(STUDIO_SESSION_TRAIN_STEPS): {max(0, cap - done)} steps are left"
            )

    def count_train_steps(self, session: str | None, steps: int) -> None:
        if session is not ADMIN:
            with self._lock:
                self._train_steps[session] = self._train_steps.get(session, 0) + steps

    def forget(self, session: str) -> None:
        with self._lock:
            self._downloads.pop(session, None)
            self._train_steps.pop(session, None)


def check_held(session: str | None, count: int, megabytes: float, adding_mb: float) -> None:
    """Refuse one more adapter of `adding_mb` for a session that holds `count` adapters of `megabytes` in all."""
    if session is ADMIN:
        return
    config = settings.current()
    if count + 1 > config.session_max_adapters:
        raise InputError(
            f"this session holds {count} adapters, its quota (STUDIO_SESSION_MAX_ADAPTERS="
            f"{config.session_max_adapters}); delete one first"
        )
    if megabytes + adding_mb > config.session_max_mb:
        raise InputError(
            f"this adapter ({adding_mb:,.1f} MB) would bring this session to {megabytes + adding_mb:,.1f} MB, over "
            f"its quota (STUDIO_SESSION_MAX_MB={config.session_max_mb:g}); delete an adapter first"
        )


# --- the end of a session --------------------------------------------------------------------------------------------


class Tracker:
    """The sessions of one app: when each was last seen, and releasing the adapters of those that ended.

    `studios` are objects with `release_session(session)` (both studios). A browser tab's session is `opened` when
    its page loads and `end`ed when the tab closes (gradio's load and unload); an API client's is `seen` at each call
    and ended once idle. Idle sessions are looked for when a session opens or calls, at most every IDLE_SWEEP_S, so
    an app nobody uses does no work.
    """

    IDLE_SWEEP_S = 10.0

    def __init__(self, studios):
        self.studios = list(studios)
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._tabs: set[str] = set()  # sessions that say goodbye: never ended for being idle
        self._swept = time.monotonic()

    def opened(self, session: str | None) -> None:
        """Note a browser tab's session: it ends when the tab closes (`end`), however long it goes without a call."""
        if session is ADMIN:
            return
        with self._lock:
            self._tabs.add(session)
        self.seen(session)

    def seen(self, session: str | None) -> None:
        """Note a call from `session`, and release the sessions idle for longer than STUDIO_SESSION_IDLE_S."""
        if session is ADMIN:
            return
        now = time.monotonic()
        with self._lock:
            self._seen[session] = now
            if now - self._swept < self.IDLE_SWEEP_S:
                return
            self._swept = now
            idle_s = settings.current().session_idle_s
            idle = [s for s, at in self._seen.items() if now - at > idle_s and s not in self._tabs]
        for other in idle:
            self.end(other)

    def end(self, session: str | None) -> None:
        """Release everything `session` holds in every studio (the shared weights stay while others use them)."""
        if session is ADMIN:
            return
        with self._lock:
            self._seen.pop(session, None)
            self._tabs.discard(session)
        for studio in self.studios:  # each also forgets the session's counts in its quotas
            studio.release_session(session)

    def sessions(self) -> list[str]:
        with self._lock:
            return list(self._seen)

