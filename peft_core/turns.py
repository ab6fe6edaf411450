"""Taking turns on a shared model: a lock served in arrival order whose holder hands over between steps.

A studio holds one model for every visitor. With a plain lock a long request (a big image, a training run) holds
it from its first step to its last, and a visitor who asks for a 0.3 s image waits behind it for as long as it
takes. Here the long request calls `between_steps()` after each denoising step, token or training step: when
anyone is waiting, it steps aside, everyone who arrived meanwhile runs (or takes their own first step), and it
carries on where it stopped. The caller saves and restores what the others may change in between (the active
adapters, the scheduler's position) through `on_resume`.

`between_steps()` is also where a request ends early when its visitor has gone (gradio marks the job dead when
the browser or client disconnects): the UI layer tells the core through `watch(still_wanted)`.
"""

import collections
import contextlib
import contextvars
import threading
from collections.abc import Callable

from peft_core.errors import StudioError


class Cancelled(StudioError):
    """The visitor who asked for this work has gone; it stopped between two steps and changed nothing."""


class TurnLock:
    """A re-entrant lock granted in the order it was asked for; its holder can `hand_over` to the waiters.

    Python's own locks are not fair: a thread that releases and re-acquires at once usually wins again, so a loop
    that released between steps would still starve the others.
    """

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._waiting: collections.deque = collections.deque()  # one ticket per waiting thread, in arrival order

    def acquire(self) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            self._wait_turn(me, depth=1)
            return True

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a TurnLock not held by this thread")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def contended(self) -> bool:
        """Someone is waiting for the lock."""
        return bool(self._waiting)

    def hand_over(self) -> bool:
        """Held by this thread: if anyone waits, let everyone waiting now run first, then take the lock back at the
        same depth. Returns whether it handed over."""
        me = threading.get_ident()
        with self._cond:
            if self._owner != me:
                raise RuntimeError("hand_over of a TurnLock not held by this thread")
            if not self._waiting:
                return False
            depth, self._owner, self._depth = self._depth, None, 0
            self._cond.notify_all()
            self._wait_turn(me, depth)
            return True

    def _wait_turn(self, me: int, depth: int) -> None:
        """Queue at the back and wait until it is this thread's turn; called with the condition held."""
        ticket = object()
        self._waiting.append(ticket)
        try:
            while self._owner is not None or self._waiting[0] is not ticket:
                self._cond.wait()
        except BaseException:
            self._waiting.remove(ticket)
            self._cond.notify_all()
            raise
        self._waiting.popleft()
        self._owner, self._depth = me, depth


# Whether the visitor who made the request running in this thread still wants its answer (None: nobody said).
_STILL_WANTED: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("still_wanted", default=None)


@contextlib.contextmanager
def watch(still_wanted: Callable[[], bool] | None):
    """Work started inside the block stops at its next step once `still_wanted()` turns False."""
    token = _STILL_WANTED.set(still_wanted)
    try:
        yield
    finally:
        _STILL_WANTED.reset(token)


def check_wanted(what: str) -> None:
    """Raise Cancelled when the visitor of this request has gone."""
    still_wanted = _STILL_WANTED.get()
    if still_wanted is not None and not still_wanted():
        raise Cancelled(f"{what} stopped: the visitor who asked for it has left")


def between_steps(
    lock: TurnLock,
    what: str,
    on_resume: Callable[[], None],
    before: Callable[[], None] | None = None,
    hand_over: bool = True,
):
    """Call between two steps of long work holding `lock`: stop if its visitor left; if others wait, `before()`
    (to note what they may change), let them go first, then `on_resume()` to put it back.

    Args:
        hand_over: False for work that cannot be put back after another's (a pipeline whose per-call state is not
            declared): only the visitor check, and the work keeps the lock to its end.
    """
    check_wanted(what)
    if not hand_over or not lock.contended:
        return
    if before is not None:
        before()
    if lock.hand_over():
        check_wanted(what)
        on_resume()
