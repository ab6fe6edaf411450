"""What the tabs share: the visitor's session bound around each call and the core's refusals turned into Gradio
errors (user_errors, user_errors_gen, api_endpoint), the API's argument types checked, the CSS. The one read
of gradio's private parts (is a running call's visitor still there?) is in ui/gradio_private.py."""

import contextlib
import functools
import inspect
import itertools
import logging
import time
import typing

import gradio as gr
import pydantic

from peft_core import StudioError, hub, sessions, turns
from ui.gradio_private import still_wanted

PRIVATE = {"api_visibility": "private"}  # the page's own events; the named API is ui/api.py
# Each new set of cards (either tab) carries a new number, so its State always differs and the cards are redrawn.
next_card_version = itertools.count(1).__next__


def shared_tag() -> None:
    """Where a card's Delete would be, on an adapter the visitor may use but never delete (docs/SESSIONS.md)."""
    gr.HTML('<span class="shared-tag" title="bundled or the admin\'s: every visitor uses it, nobody deletes it">'
            "shared</span>", scale=0, min_width=70)  # fmt: skip
# Small demo images are shown enlarged with crisp pixels instead of a blur. The Images tab's first screen
# (#first-screen: #ask, #result, #mix) is a grid: the prompt and the mix on the left, the result on the right
# beside both; on a narrow window one column in the order prompt, result, mix. Cards stay compact. Fonts: the
# system's own, so the page renders the same offline (the theme's web fonts never arrive there).
CSS = """
:root, .gradio-container { --font: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans",
  "Helvetica Neue", Arial, sans-serif; --font-mono: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
.pixelated img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
.adapter-card .facts { padding: 0 var(--size-2) var(--size-1); font-size: var(--text-sm); }
#first-screen { display: grid !important; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr);
  grid-template-areas: "ask result" "mix result"; align-items: start; gap: var(--layout-gap); }
#first-screen > #ask { grid-area: ask; }
#first-screen > #result { grid-area: result; }
#first-screen > #mix { grid-area: mix; }
#first-screen > .column { min-width: 0 !important; width: auto !important; }
@media (max-width: 768px) {
  #first-screen { grid-template-columns: minmax(0, 1fr); grid-template-areas: "ask" "result" "mix"; }
}
.adapter-card .card-head { flex-wrap: nowrap; align-items: flex-start; }
.adapter-card .thumbnail { flex: 0 0 56px; align-self: flex-start; }
/* The Text tab's presets: captioned cards in the theme's colours (name, then the note), wrapped, never clipped;
   an unavailable one greyed (its caption says why). The "shared" tag on a card the visitor cannot delete. */
.preset-card { display: block !important; white-space: pre-line !important; height: auto !important; min-height: 64px;
  text-align: left !important; overflow-wrap: anywhere; line-height: 1.35; font-weight: normal; }
.preset-card::first-line { font-weight: 600; }
.preset-card:disabled { opacity: 0.55; filter: grayscale(1); cursor: not-allowed; }
.adapter-card .shared-tag { display: inline-block; white-space: nowrap; align-self: center; padding: 1px 8px;
  border-radius: 999px; font-size: var(--text-sm); border: 1px solid var(--border-color-primary);
  color: var(--body-text-color-subdued); }
"""


def gpu(fn):
    """On ZeroGPU Spaces, `spaces.GPU` lends a GPU for each call of `fn`; where the `spaces` package is not
    importable (a laptop, CI, a dedicated GPU) `fn` is returned as it is.

    `spaces.GPU` may run `fn` in another process, in a thread that does not carry the caller's context variables:
    the visitor's session bound by user_errors around this call (peft_core/sessions.py) would be lost there, and
    the call would run as the admin, whose adapters every visitor shares. So the session is read here, passed to
    the lent function as an argument (arguments do travel) and bound again inside it. Plain functions only: no
    streamed handler runs under it.
    """
    try:
        import spaces
    except ImportError:
        return fn
    if inspect.isgeneratorfunction(fn):
        raise TypeError(f"gpu() wraps plain functions; {fn.__name__} is a generator")

    def run_as(session, args, kwargs):
        with sessions.bound(session):
            return fn(*args, **kwargs)

    run_as.__name__ = run_as.__qualname__ = fn.__name__  # what spaces names the call after
    lent = spaces.GPU(run_as)

    @functools.wraps(fn)  # gradio reads fn's parameters (gr.Progress, gr.Request) through __wrapped__
    def call(*args, **kwargs):
        return lent(sessions.current(), args, kwargs)

    return call


log = logging.getLogger("adapter_studio")


def session_of(request: gr.Request | None) -> str | None:
    """The visitor's session (gradio's session_hash: one per browser tab, one per gradio_client Client); None, the
    admin, only for a direct call without gradio. A request without a hash is a visitor all the same."""
    if request is None:
        return sessions.ADMIN
    return getattr(request, "session_hash", None) or "anonymous"


def _request_parameter(fn):
    """A function that finds, in a call of `fn`, the value of its parameter annotated `gr.Request`: gradio fills
    that parameter with the visitor's request (and API clients never see it). A handler without one would run as
    the admin, whose adapters every visitor shares, so it is refused when decorated."""
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    name = next((n for n, p in signature.parameters.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                 and hints.get(n) in (gr.Request, gr.Request | None)), None)  # fmt: skip
    if name is None:
        raise TypeError(f"{fn.__qualname__} needs a parameter annotated gr.Request (e.g. `request: gr.Request = "
                        "None`, before any * or **): its session is the visitor's")  # fmt: skip
    return lambda args, kwargs: signature.bind_partial(*args, **kwargs).arguments.get(name)


def _refused(endpoint: str, session, exc: StudioError):
    """A user error: one log line (endpoint, session prefix, message), a Gradio error without a traceback."""
    log.warning("/%s [%s] refused: %s", endpoint, sessions.prefix(session), exc)
    return gr.Error(str(exc), print_exception=False)


def seen_by(tracker: sessions.Tracker, fn):
    """The API endpoint `fn`, telling `tracker` at each call that the caller's session is still here: a
    gradio_client Client never says goodbye, so its session ends once idle (app.py: a tab's ends when it closes)."""
    request_in = _request_parameter(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tracker.seen(session_of(request_in(args, kwargs)))
        return fn(*args, **kwargs)

    return wrapper


def user_errors(fn):
    """Run a page handler as the visitor's session (peft_core/sessions.py) and show the core's refusals as Gradio
    errors (a toast on the page, an AppError for API clients), logged in one line; a real fault keeps its
    traceback. `fn` declares a gr.Request parameter (gradio fills it; None in a direct call: the admin)."""
    request_in = _request_parameter(fn)

    @functools.wraps(fn)  # gradio reads fn's own parameters through __wrapped__
    def wrapper(*args, **kwargs):
        request = request_in(args, kwargs)
        session = session_of(request)
        with sessions.bound(session):
            try:
                return fn(*args, **kwargs)
            except StudioError as exc:
                raise _refused(fn.__name__, session, exc) from None

    return wrapper


def api_endpoint(fn):
    """A named API endpoint: its arguments' types checked against its annotations first, the core's refusals shown
    as Gradio errors, the visitor's departure passed on to the core (turns.watch), and on ZeroGPU a GPU lent.
    `fn` declares a gr.Request parameter, as page handlers do (user_errors); API clients never see it.

    gradio hands the JSON a client sent to the function as it is: without the check, `adapters="a"` or a name given
    as a list reach the core as the wrong type and fail inside a library with gradio's generic message.
    """
    signature = inspect.signature(fn)
    request_in = _request_parameter(fn)
    checks = _type_checks(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs).arguments
        request = request_in(args, kwargs)
        session = session_of(request)
        with sessions.bound(session):  # the core reads whose names these are (peft_core/sessions.py)
            try:
                for name, value in arguments.items():
                    if name in checks:
                        checks[name](value)
                with turns.watch(still_wanted(request, fn.__name__)):
                    return fn(**arguments)
            except StudioError as exc:
                raise _refused(fn.__name__, session, exc) from None

    return gpu(wrapper)


# What an endpoint's argument may be, by its annotation: (the type pydantic checks it against in strict mode, the
# words a refusal says it wants). Strict: JSON's "3" is not an integer nor "false" a bool. Two allowances: a whole
# float is an integer (JSON clients send 8.0), and a comma-separated string is the text box's spelling of a list of
# names (the core splits it).
def _whole(x: float) -> float:
    if not x.is_integer():
        raise ValueError("not a whole number")
    return x


_WANTED = {
    bool: (bool, "true or false"),
    int: (int | typing.Annotated[float, pydantic.AfterValidator(_whole)], "an integer"),
    float: (float, "a number"),
    str: (str, "text"),
    list[str]: (list[str] | str, "a list of names (or one comma-separated string)"),
    dict[str, float]: (dict[str, float], "a mapping of adapter names to numbers, like {'style': 0.8}"),
}


def _type_checks(fn) -> dict:
    """{argument: a check raising StudioError unless the value fits its annotation (one of _WANTED, or None)} for
    every argument of `fn` whose annotation is one of those; the others (gr.Request, FileData) are not checked."""
    checks = {}
    for name, hint in typing.get_type_hints(fn).items():
        optional = type(None) in typing.get_args(hint)
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
        if name == "return" or base not in _WANTED:
            continue
        wanted, words = _WANTED[base]
        adapter = pydantic.TypeAdapter(wanted | None if optional else wanted, config=pydantic.ConfigDict(strict=True))
        checks[name] = functools.partial(_check, adapter, f"argument {name!r} of /{fn.__name__}", words)
    return checks


def _check(adapter: pydantic.TypeAdapter, where: str, words: str, value) -> None:
    try:
        adapter.validate_python(value)
    except pydantic.ValidationError:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise StudioError(f"{where} must be {words}, got {type(value).__name__} {shown}") from None


def user_errors_gen(fn):
    """user_errors for generator handlers (streamed progress). The session is bound around each step, not once:
    gradio may run the steps of one generator in different worker threads, and a context variable set in one
    thread is not seen in the next."""
    request_in = _request_parameter(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        request = request_in(args, kwargs)
        session = session_of(request)
        steps = fn(*args, **kwargs)
        try:
            while True:
                with sessions.bound(session):
                    try:
                        item = next(steps)
                    except StopIteration:
                        return
                    except StudioError as exc:
                        raise _refused(fn.__name__, session, exc) from None
                yield item
        finally:
            with sessions.bound(session):
                steps.close()  # the visitor left: the handler's own clean-up runs as them

    return wrapper


@contextlib.contextmanager
def hub_progress(progress: gr.Progress, what: str, repos=()):
    """Show the Hub downloads made inside the block as a progress bar in bytes ("downloading org/name/file:
    3.1 / 9.8 MB"), and `what` (e.g. "loading org/name") before, between and after them.

    `repos`: the (repo id, revision) pairs the block will load. One that needs the Hub shows "contacting the Hub…"
    at once and is refused within seconds, with the reason, when the Hub cannot be reached (hub.check_reachable),
    instead of sitting out the network's timeouts."""
    shown = [0.0]
    for repo_id, revision in repos:
        if not hub.open_repo(repo_id, revision or "main").bundled:
            progress(None, desc=f"contacting the Hub for {repo_id}…")
            hub.check_reachable(repo_id, revision or "main")

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


def choices_update(names: list[str], value=None):
    return gr.update(choices=names, value=value if value in names else (names[-1] if names else None))


def page_url(request: gr.Request | None) -> str:
    """The address the user reached the app at (share links included), for copy-paste snippets."""
    if request is None:
        return "http://127.0.0.1:7860/"
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "127.0.0.1:7860")
    scheme = request.headers.get("x-forwarded-proto", "http")
    return f"{scheme}://{host}/"
