"""Loading a studio's defaults in the background, so `python app.py` serves its page before the models are in.

Importing diffusers and transformers alone takes about 8 s on a 2-core CPU; the page needs neither. A studio
whose defaults are loading answers every call once they are in (or after STARTUP_WAIT_S, with a clear message),
so the first request simply waits instead of seeing an empty studio.

Both studios stay closed until every default is in, not just their own: a request that imported peft or
transformers while the loader was still importing them (diffusers pulls in transformers' CLIP classes) raced the
loader's imports and left the image side empty ("cannot import name 'CLIPImageProcessor'").
"""

import sys
import threading
import traceback

from peft_core.errors import InputError

# How long a call waits for the defaults before it gives up with a message.
STARTUP_WAIT_S = 300.0


class Startup:
    """Done, or loading in one background thread; `wait()` blocks other threads until it is done."""

    def __init__(self):
        self._done = threading.Event()
        self._done.set()
        self._owner: int | None = None  # the loading thread: it must not wait for itself
        self.error: BaseException | None = None
        self._after: list[tuple[str, object]] = []  # (what, fn): work the first screen need not wait for

    def after(self, what: str, fn) -> None:
        """Run `fn` once a background load has finished, in a thread of its own, so that it delays neither the
        studios opening nor the page (the default adapters' card pictures). Errors are printed, never raised."""
        self._after.append((what, fn))

    def begin(self) -> None:
        self._done.clear()

    def run(self, what: str, fn) -> None:
        """Run `fn` as the loading work (in the calling thread); errors are printed and kept, never raised.
        The studio stays closed until `finish()`."""
        self._owner = threading.get_ident()
        try:
            fn()
        except Exception as exc:  # the app keeps serving: a user can still load another model by hand
            self.error = exc
            print(f"loading {what} failed: {exc}", file=sys.stderr)
            traceback.print_exc()

    def finish(self) -> None:
        self._owner = None
        self._done.set()
        if self._after:
            later = Startup()  # its own error and owner: the studios are open already
            work = [(what, fn) for what, fn in self._after]
            threading.Thread(target=lambda: [later.run(what, fn) for what, fn in work], name="after-defaults",
                             daemon=True).start()  # fmt: skip

    def wait(self, timeout: float = STARTUP_WAIT_S) -> None:
        if threading.get_ident() == self._owner:
            return
        if not self._done.wait(timeout):
            raise InputError(f"the default models are still loading after {timeout:.0f} s; try again in a moment")

    @property
    def loading(self) -> bool:
        return not self._done.is_set()
