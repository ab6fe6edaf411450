"""ui/gradio_private.py reads gradio's private parts to tell whether a running call's visitor still waits for it.
These tests hold it to the installed gradio: a call nobody left stays wanted, a client's cancel and a dropped event
stream (a closed tab) end it, and gradio names its tasks the way the module reads them. The day gradio changes one
of those, a test here fails by name, before a generation nobody waits for holds the pipeline to its end."""

import contextlib
import json
import time
from unittest import mock

import gradio as gr
import httpx
from gradio_client import Client

from ui.gradio_private import TASK_SEP, still_wanted


@contextlib.contextmanager
def waiting_app():
    """An app with one endpoint, /wait, that waits `seconds` unless its visitor leaves first, asking still_wanted
    as the studio's long work does; `seen` records each answer (True, then False once the visitor has gone)."""
    seen = []

    def wait(seconds: float, request: gr.Request | None = None) -> str:
        wanted = still_wanted(request, "wait")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            seen.append(wanted())
            if not seen[-1]:
                return "left"
            time.sleep(0.05)
        return "stayed"

    with gr.Blocks() as demo:
        gr.api(wait, api_name="wait")
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield demo.local_url, seen
    finally:
        demo.close()


def wait_for(condition, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_call_nobody_left_stays_wanted():
    with waiting_app() as (url, seen):
        assert Client(url, verbose=False).predict(0.6, api_name="/wait") == "stayed"
    assert seen and all(seen)


def test_a_cancelled_client_job_is_no_longer_wanted():
    """gradio_client's Job.cancel(): gradio cancels the job's asyncio task, found here by its name."""
    with waiting_app() as (url, seen):
        job = Client(url, verbose=False).submit(60.0, api_name="/wait")
        assert wait_for(lambda: True in seen), "the call never started"
        job.cancel()
        assert wait_for(lambda: False in seen), "still wanted after Job.cancel()"
    assert seen[-1] is False and seen.count(False) == 1


def test_a_dropped_event_stream_is_no_longer_wanted(monkeypatch):
    """A closed tab drops its event stream: gradio marks the running job dead (Event.alive), read here."""
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.2")  # how often gradio's stream notices it was dropped
    with waiting_app() as (url, seen):
        session = "tab-that-closes"
        joined = httpx.post(f"{url}gradio_api/queue/join",
                            json={"data": [60.0], "fn_index": 0, "session_hash": session})  # fmt: skip
        assert joined.status_code == 200, joined.text
        with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:") and json.loads(line[5:]).get("msg") == "process_starts":
                    break
            assert wait_for(lambda: True in seen), "the call never started"
        # the stream is closed here, as a closed tab closes it
        assert wait_for(lambda: False in seen), "still wanted after its event stream was dropped"


def test_a_call_without_gradio_has_nobody_to_leave():
    assert still_wanted(None, "wait") is None


def test_gradio_names_a_jobs_task_as_read_here():
    """still_wanted finds a job's task by the name gradio gives it: "<session>_<fn index><gradio-sep><event id>"."""
    from gradio import utils

    task = mock.Mock()
    utils.set_task_name(task, "session", 3, "event", batch=False)
    task.set_name.assert_called_once_with(f"session_3{TASK_SEP}event")

