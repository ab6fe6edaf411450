"""Text requests that arrive together share one `generate`: a mixed-adapter batch, gathered for a few milliseconds.

Eight visitors who each ask for a different adapter used to wait for one another, the model running eight times at
batch size 1. Here each request thread hands its rows (`Row`: one generation, already validated) to the
`TextBatcher` and waits. The first waiting thread leads: it waits up to WINDOW_S from the oldest row's arrival for
batch-mates, takes the studio's lock, takes up to MAX_ROWS waiting rows and serves them:

- greedy rows with the base or one plain LoRA each (`TextModel.shares_pass`) run as one left-padded batch, each row
  through its own adapter (peft's mixed batch, mixed.py), each stopping at its own max_new_tokens;
- a row alone among them, with one LoRA, runs with that LoRA merged (the base's cost, mixed.py); rows that all
  want the same LoRA run merged together;
- everything else runs as a batch of one, as before: sampled rows (transformers draws one sample for the whole
  batch from one generator, so a row's text would depend on its batch-mates; alone, it equals its solo run),
  several adapters at once, DoRA and the other peft types.

Then the next waiting thread leads. A row's names are resolved and its prompt encoded in its own context (its
session, and whether its visitor is still there), so a row that fails there fails alone; a batch that fails in the
library is run again row by row, so only the row at fault answers with the error. Between tokens the batch hands
the lock to whoever waits (turns.py), with its adapters removed and put back after; a row whose visitor left stops
there, and the others go on.

The studio's own queue rather than Gradio's `batch=True`: that one batches one event's calls only (the API's
generate_text, not compare_text or the page's own button, nor calls from Python), fails every request of a batch
when the function raises, and hands the function lists instead of the typed arguments of docs/API.md.
"""

import contextvars
import threading
import time
from dataclasses import dataclass, field

from peft_core.errors import InputError, StudioError
from peft_core.turns import check_wanted

WINDOW_S = 0.005  # how long the first request waits for batch-mates: a few ms, next to ~10 ms a token
MAX_ROWS = 8  # rows in one batch; app.py lets this many generation calls in at once


@dataclass(frozen=True)
class Row:
    """One generation of a batch, validated (TextStudio.check_request): what decides its text."""

    prompt: str
    adapters: tuple[str, ...]  # active for this row, as its session names them; () is the base
    max_new_tokens: int
    do_sample: bool = False
    seed: int = 0
    temperature: float = 1.0


@dataclass(eq=False)
class _Waiting:
    row: Row
    context: contextvars.Context  # the requesting thread's: its session and its visitor's still_wanted
    call: object  # the run() call it came with: its rows are never split between two batches
    arrived: float = field(default_factory=time.monotonic)
    text: str | None = None
    error: BaseException | None = None
    done: bool = False
    keys: tuple = ()
    ids: object = None
    progress: object = None  # progress(token, total) after each of this row's new tokens, or None
    made: int = 0  # this row's new tokens so far

    def fail(self, exc: BaseException) -> None:
        self.error, self.done = exc, True


class TextBatcher:
    """Gathers the rows of concurrent requests and serves them under `lock`, as few `generate` calls as it can.

    Args:
        lock: the studio's TurnLock.
        current: () -> (TextModel, AdapterPool) now loaded; read under the lock.
    """

    def __init__(self, lock, current, window_s: float = WINDOW_S, max_rows: int = MAX_ROWS):
        self.lock, self.current, self.window_s, self.max_rows = lock, current, window_s, max_rows
        self._cond = threading.Condition()
        self._rows: list[_Waiting] = []
        self._leading = False
        self.batches: list[int] = []  # rows per generate call of the last few (for tests and the bench)

    def run(self, rows: list[Row], progress=None) -> list[str]:
        """Each row's text, in order; raises the first failed row's error. Rows of one call share one batch.
        `progress(token, total)` is called after each of a row's new tokens (for each row, counted from 1)."""
        context, call = contextvars.copy_context(), object()
        mine = [_Waiting(row, context, call, progress=progress) for row in rows]
        with self._cond:
            self._rows.extend(mine)
            self._cond.notify_all()
        while True:
            with self._cond:
                while self._leading and not all(w.done for w in mine):
                    self._cond.wait()
                if all(w.done for w in mine):
                    break
                self._leading = True
            try:
                self._lead()
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        for w in mine:
            if w.error is not None:
                raise w.error
        return [w.text for w in mine]

    def _lead(self) -> None:
        with self._cond:  # wait for batch-mates, up to the window from the oldest row's arrival
            deadline = self._rows[0].arrived + self.window_s if self._rows else 0
            while len(self._rows) < self.max_rows and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
        with self.lock:
            with self._cond:
                n = min(self.max_rows, len(self._rows))
                while n < len(self._rows) and self._rows[n].call is self._rows[n - 1].call:
                    n += 1  # the rest of a compare's rows: the base and the adapted share a batch
                taken, self._rows = self._rows[:n], self._rows[n:]
            try:
                self._serve(taken)
            finally:
                for w in taken:
                    if not w.done:
                        w.fail(StudioError("the generation ended without a result"))

    def _serve(self, taken: list[_Waiting]) -> None:
        """Resolve and encode each row in its own context, then run the rows in as few generations as allowed."""
        lm, pool = self.current()
        for w in taken:
            try:
                w.keys = tuple(w.context.run(pool.keys, w.row.adapters))
                pool.touch(w.keys)
                w.ids = lm.encode(w.row.prompt, w.row.max_new_tokens)
            except Exception as exc:  # the row's own mistake (a name deleted meanwhile, a prompt too long)
                w.fail(exc)
        ready = [w for w in taken if not w.done]
        shared = [w for w in ready if not w.row.do_sample and lm.shares_pass(w.keys)]
        if len(shared) < 2:  # no batch-mate: alone, a lone LoRA runs merged
            shared = []
        groups = ([shared] if shared else []) + [[w] for w in ready if w not in shared]
        for group in groups:
            self._generate(lm, pool, group)

    def _generate(self, lm, pool, group: list[_Waiting]) -> None:
        row = group[0].row  # a sampled row is alone in its group: its settings are the group's
        forward = lm.forward_for([w.keys for w in group], any_loaded=len(pool) > 0)
        self.batches = [*self.batches[-31:], len(group)]
        try:
            texts = lm.generate_rows(
                [(w.ids, w.row.max_new_tokens) for w in group], forward,
                lambda fwd: self._between_tokens(lm, pool, group, fwd), row.do_sample, row.seed, row.temperature,
            )  # fmt: skip
        except StudioError as exc:  # about the batch (its model replaced meanwhile): every row's answer
            for w in group:
                if not w.done:
                    w.fail(exc)
            return
        except Exception as exc:
            if len(group) == 1:
                group[0].fail(exc)
                return
            for w in group:  # the library refused the batch: alone, only the row at fault fails
                if not w.done:
                    self._generate(lm, pool, [w])
            return
        for w, text in zip(group, texts, strict=True):
            if not w.done:
                w.text, w.done = text, True

    def _between_tokens(self, lm, pool, group: list[_Waiting], forward) -> list[bool]:
        """Before each token: stop the rows whose visitor left; if anyone waits for the lock, hand it over with
        this batch's adapters removed, then check that the model and the rows' adapters are still there."""
        for w in group:  # called after each new token: count it for the rows still making theirs
            if w.progress is not None and not w.done and w.made < w.row.max_new_tokens:
                w.made += 1
                w.context.run(w.progress, w.made, w.row.max_new_tokens)
        for w in group:
            if not w.done:
                try:
                    w.context.run(check_wanted, "the generation")
                except StudioError as exc:
                    w.fail(exc)
        if self.lock.contended and not all(w.done for w in group):
            forward.remove()
            self.lock.hand_over()
            if self.current()[0] is not lm:
                raise InputError("generation stopped: the text model was replaced meanwhile")
            for w in group:  # one deleted meanwhile: that row stops, with the refusal it would get now
                if not w.done and any(key not in pool.entries for key in w.keys):
                    try:
                        w.context.run(pool.check_loaded, w.row.adapters)
                        raise InputError(f"adapter(s) {', '.join(map(repr, w.row.adapters))} were replaced meanwhile")
                    except InputError as exc:
                        w.fail(exc)
            forward.apply()
        return [w.done for w in group]
