"""The one place that reads gradio's private parts: whether the visitor of a running call still waits for it.

gradio 6.31 has no public form of that question for a plain (non-generator) function. `cancels=`, a closed tab and
gradio_client's `Job.cancel()` stop a generator between two yields, but a function already running "will be allowed
to finish" (gradio's words for `cancels=`); `gr.Request.is_disconnected()` asks about the HTTP request that queued
the call, which ended long before. An image of 100 steps nobody will see would hold the shared pipeline to its end.
So this module reads what gradio itself uses to stop a job:

- a closed tab or a dropped event stream marks the running job dead: `Event.alive`, on the events in
  `blocks._queue.active_jobs` (gradio's `Queue.clean_events`);
- a client's cancel (`POST /cancel`, gradio's `utils.cancel_tasks`) cancels the job's asyncio task, which gradio
  names "<session>_<fn index><gradio-sep><event id>" (`utils.set_task_name`); the task then ends while the worker
  thread running the function goes on. The fn index is the event's key in `blocks.fns`.

tests/test_gradio_private.py checks each of these against the installed gradio, so a gradio that changes them fails
there first, by name. The rest of the app reaches this only through `still_wanted` (re-exported by ui/common.py).
"""

import asyncio
import time

import anyio.from_thread
import gradio as gr

# How often long work asks whether its visitor is still there: each ask is a hop to the server's event loop.
CANCEL_CHECK_S = 0.2
TASK_SEP = "<gradio-sep>"  # gradio.utils.set_task_name's separator


def still_wanted(request: gr.Request | None, api_name: str):
    """A callable telling whether the visitor who sent `request` to /`api_name` still waits for the answer, or None
    (a call not on the queue: nobody can leave it). It reads gradio at most every CANCEL_CHECK_S, and long work
    stops at its next step (peft_core/turns.py). Call it in the handler's own worker thread: that thread reaches the
    server's event loop, a thread it starts does not."""
    session = getattr(request, "session_hash", None)
    blocks = blocks_of(request)
    queue = getattr(blocks, "_queue", None)
    fns = getattr(blocks, "fns", {})
    fn_index = next((i for i, f in fns.items() if getattr(f, "api_name", None) == api_name), None)
    if session is None or queue is None:
        return None
    prefix = f"{session}_{fn_index}{TASK_SEP}"
    ours = (job_tasks(prefix) or {}) if fn_index is not None else {}  # {}: gradio names its tasks otherwise
    last = {"at": time.monotonic(), "wanted": True}

    def wanted() -> bool:
        if time.monotonic() - last["at"] < CANCEL_CHECK_S:
            return last["wanted"]
        jobs = [job for running in list(getattr(queue, "active_jobs", ())) for job in running or ()]
        alive = all(getattr(job, "alive", True) for job in jobs if getattr(job, "session_hash", None) == session)
        running = job_tasks(prefix) if ours else None  # None: asked from a thread that cannot reach the loop
        if running is not None:  # two calls of one endpoint by one session cannot be told apart: both must go
            alive = alive and any(name in running and not running[name] for name in ours)
        last.update(at=time.monotonic(), wanted=alive)
        return alive

    return wanted


def job_tasks(prefix: str) -> dict[str, bool] | None:
    """{name: being cancelled} of the asyncio tasks on the server's loop whose names start with `prefix`; None when
    not called from one of anyio's worker threads (gradio runs functions in those)."""

    def tasks() -> dict[str, bool]:
        return {t.get_name(): t.cancelling() > 0 for t in asyncio.all_tasks() if t.get_name().startswith(prefix)}

    try:
        return anyio.from_thread.run_sync(tasks)
    except RuntimeError:
        return None


def blocks_of(request: gr.Request | None):
    """The Blocks app serving `request` (gradio's App.get_blocks), or None for a direct call."""
    try:
        return request.request.app.get_blocks()
    except AttributeError:  # no request (a direct call), or a gradio whose request does not reach the app
        return None
