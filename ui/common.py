"""What the tabs share: the visitor's session bound around each call and the core's refusals turned into Gradio
errors (user_errors, user_errors_gen, api_endpoint), PNG files for API clients, the CSS."""

import contextlib
import functools
import inspect
import itertools
import logging
import tempfile
import time
import typing
import uuid
from pathlib import Path

import gradio as gr
from gradio.data_classes import FileData

from peft_core import StudioError, hub, sessions, turns

OUTPUT_DIR = Path(tempfile.gettempdir()) / "adapter-studio"
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
# The hidden parameter the wrappers add: gradio passes a gr.Request to a parameter annotated with it, and neither
# the page's inputs nor API clients ever see it.
_REQUEST = "_studio_request"


def session_of(request: gr.Request | None) -> str | None:
    """The visitor's session (gradio's session_hash: one per browser tab, one per gradio_client Client); None, the
    admin, only for a direct call without gradio. A request without a hash is a visitor all the same."""
    if request is None:
        return sessions.ADMIN
    return getattr(request, "session_hash", None) or "anonymous"


def _with_request(fn):
    """(fn's signature with the hidden request parameter added at the end, a function that splits the call's
    arguments into (request, args, kwargs))."""
    signature = inspect.signature(fn)
    hidden = inspect.Parameter(_REQUEST, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                               annotation=gr.Request | None)  # fmt: skip
    params = list(signature.parameters.values())
    # After the last positional parameter: gradio inserts special arguments by position among those.
    at = max((i + 1 for i, p in enumerate(params) if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)),
             default=0)  # fmt: skip
    with_request = signature.replace(parameters=[*params[:at], hidden, *params[at:]])

    def split(args, kwargs):
        if _REQUEST in kwargs:
            kwargs = dict(kwargs)
            return kwargs.pop(_REQUEST), args, kwargs
        if len(args) > at:  # gradio passed it by position
            return args[at], args[:at] + args[at + 1 :], kwargs
        return None, args, kwargs

    return with_request, split


def _refused(endpoint: str, session, exc: StudioError):
    """A user error: one log line (endpoint, session prefix, message), a Gradio error without a traceback."""
    log.warning("/%s [%s] refused: %s", endpoint, sessions.prefix(session), exc)
    return gr.Error(str(exc), print_exception=False)


def _seen(request, session) -> None:
    """Tell the app's session tracker (app.py) that `session` is here; it releases idle ones meanwhile."""
    tracker = getattr(_blocks_of(request), "studio_sessions", None)
    if tracker is not None:
        tracker.seen(session)


def user_errors(fn):
    """Run a page handler as the visitor's session (peft_core/sessions.py) and show the core's refusals as Gradio
    errors (a toast on the page, an AppError for API clients), logged in one line; a real fault keeps its
    traceback."""
    with_request, split = _with_request(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        request, args, kwargs = split(args, kwargs)
        session = session_of(request)
        _seen(request, session)
        with sessions.bound(session):
            try:
                return fn(*args, **kwargs)
            except StudioError as exc:
                raise _refused(fn.__name__, session, exc) from None

    wrapper.__signature__ = with_request
    wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), _REQUEST: gr.Request | None}
    return wrapper


def api_endpoint(fn):
    """A named API endpoint: its arguments' types checked against its annotations first, the core's refusals shown
    as Gradio errors, the visitor's departure passed on to the core (turns.watch), and on ZeroGPU a GPU lent.

    gradio hands the JSON a client sent to the function as it is: without the check, `adapters="a"` or a name given
    as a list reach the core as the wrong type and fail inside a library with gradio's generic message.
    """
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    # gradio passes a gr.Request to a parameter annotated with it (here, one more at the end); API clients never
    # see that parameter.
    request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                annotation=gr.Request | None)  # fmt: skip
    with_request = signature.replace(parameters=[*signature.parameters.values(), request])

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        arguments = with_request.bind(*args, **kwargs).arguments
        request = arguments.pop("request", None)
        session = session_of(request)
        _seen(request, session)
        with sessions.bound(session):  # the core reads whose names these are (peft_core/sessions.py)
            try:
                for name, value in arguments.items():
                    if name in hints:
                        _check_type(fn.__name__, name, value, hints[name])
                with turns.watch(still_wanted(request, fn.__name__)):
                    return fn(**arguments)
            except StudioError as exc:
                raise _refused(fn.__name__, session, exc) from None

    wrapper.__signature__ = with_request
    wrapper.__annotations__ = {**fn.__annotations__, "request": gr.Request | None}
    return gpu(wrapper)


def still_wanted(request: gr.Request | None, api_name: str):
    """A callable telling whether the visitor who sent `request` to /`api_name` still waits for the answer, or None.

    gradio stops only generator functions itself. A closed browser tab marks the running job dead (`Event.alive`);
    a client's cancel (`Job.cancel()`) cancels the job's asyncio task, named "<session>_<fn index><gradio-sep>
    <event id>", which then ends while this thread runs on. There is no public API for either, so this reads both
    (the tasks on the server's event loop, from the worker thread gradio runs the function in), at most every
    CANCEL_CHECK_S, and long work stops at its next step (peft_core/turns.py).
    """
    session = getattr(request, "session_hash", None)
    blocks = _blocks_of(request)
    queue = getattr(blocks, "_queue", None)
    fns = getattr(blocks, "fns", {})
    fn_index = next((i for i, f in fns.items() if getattr(f, "api_name", None) == api_name), None)
    if session is None or queue is None:
        return None  # not a queued call: nobody can leave it
    prefix = f"{session}_{fn_index}<gradio-sep>"
    ours = (_job_tasks(prefix) or {}) if fn_index is not None else {}  # {}: gradio names its tasks otherwise
    last = {"at": time.monotonic(), "wanted": True}

    def wanted() -> bool:
        if time.monotonic() - last["at"] < CANCEL_CHECK_S:
            return last["wanted"]
        jobs = [job for running in list(getattr(queue, "active_jobs", ())) for job in running or ()]
        alive = all(getattr(job, "alive", True) for job in jobs if getattr(job, "session_hash", None) == session)
        running = _job_tasks(prefix) if ours else None  # None: asked from a thread that cannot reach the loop
        if running is not None:  # two calls of one endpoint by one session cannot be told apart: both must go
            alive = alive and any(name in running and not running[name] for name in ours)
        last.update(at=time.monotonic(), wanted=alive)
        return alive

    return wanted


# How often long work asks whether its visitor is still there: each ask is a hop to the server's event loop.
CANCEL_CHECK_S = 0.2


def _job_tasks(prefix: str) -> dict[str, bool] | None:
    """{name: being cancelled} of the asyncio tasks on the server's loop whose names start with `prefix`; None when
    not called from one of anyio's worker threads (gradio runs functions in those)."""
    import asyncio

    import anyio.from_thread

    def tasks() -> dict[str, bool]:
        return {t.get_name(): t.cancelling() > 0 for t in asyncio.all_tasks() if t.get_name().startswith(prefix)}

    try:
        return anyio.from_thread.run_sync(tasks)
    except RuntimeError:
        return None


def _blocks_of(request):
    try:
        return request.request.app.get_blocks()
    except AttributeError:  # no request (a direct call), or a gradio whose request does not reach the app
        return None


def _check_type(endpoint: str, name: str, value, hint) -> None:
    """Refuse `value` unless it is of type `hint` (str, int, float, bool, X | None, list[str], dict[str, float])."""
    where = f"argument {name!r} of /{endpoint}"
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint)
    if hint is bool:
        ok, want = isinstance(value, bool), "true or false"
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()
        want = "an integer"
    elif hint is float:
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif hint is str:
        ok, want = isinstance(value, str), "text"
    elif origin is list:
        # A comma-separated string is the text box's spelling of a list of names; the core splits it.
        ok = isinstance(value, str) or isinstance(value, list) and all(isinstance(v, str) for v in value)
        want = "a list of names (or one comma-separated string)"
    elif origin is dict:
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in value.items()
        )
        want = "a mapping of adapter names to numbers, like {'style': 0.8}"
    else:
        return
    if not ok:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise StudioError(f"{where} must be {want}, got {type(value).__name__} {shown}")


def user_errors_gen(fn):
    """user_errors for generator handlers (streamed progress). The session is bound around each step, not once:
    gradio may run the steps of one generator in different worker threads, and a context variable set in one
    thread is not seen in the next."""
    with_request, split = _with_request(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        request, args, kwargs = split(args, kwargs)
        session = session_of(request)
        _seen(request, session)
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

    wrapper.__signature__ = with_request
    wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), _REQUEST: gr.Request | None}
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
