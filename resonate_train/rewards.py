"""Rewards from ttaeval scorers: the very objects ``ttaeval run`` scores with.

A reward spec is ``SCORER_SPEC[#METRIC][@WEIGHT]``: ``clap:mini@0.5``, ``judge:mini#aqa@1.0``,
``judge:mini,w_quality=0#total``. The metric defaults to the scorer's first one (clap's ``clap``,
the judge's ``aqa``: Resonate's reward). The total is the weighted sum; a clip any component failed
on gets NaN (masked out of the advantages downstream), never 0.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import pickle
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ttaeval.io.audio import Clip
from ttaeval.io.prompts import Prompt
from ttaeval.rewards import RewardTerm, parse_terms, score_clips

__all__ = ["RewardProcess", "RewardTerm", "Rewards"]


class Rewards:
    """Score generated audio with one or more weighted scorer metrics; can run in the background."""

    def __init__(
        self,
        specs: Sequence[str],
        workers: int = 1,
        device: str | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        """``workers``: batches ``submit`` scores at once (in order of submission when 1);
        ``device``: where scorers whose spec sets none compute (the trainer's device); ``weights``:
        one per spec, instead of the specs' ``@WEIGHT``."""
        if workers < 1:
            raise ValueError(f"reward workers must be >= 1, got {workers}")
        self.terms = parse_terms(specs, weights, device)
        self._pool = ThreadPoolExecutor(max_workers=workers)

    def __call__(
        self, audio: np.ndarray, rate: int, prompts: Sequence[Prompt]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Total reward per clip ``(B,)`` and each term's values (for logging)."""
        clips = [Clip(a[None] if a.ndim == 1 else a, rate, prompt=p) for a, p in zip(audio, prompts)]
        batch = score_clips(self.terms, clips)
        return batch.total, batch.parts

    def submit(self, audio: np.ndarray, rate: int, prompts: Sequence[Prompt]) -> Future:
        """Score in a background thread (overlapping the next rollout); ``.result()`` gives ``__call__``'s."""
        return self._pool.submit(self, audio, rate, list(prompts))


class RewardProcess:
    """``Rewards.submit`` in a spawned process with its own scorers and ``workers`` threads: the
    reward's Python work (a ``judge:http`` client encoding wavs, reading replies) then runs under that
    process's interpreter lock instead of competing with sampling and training for the trainer's.

    Scores equal ``Rewards``' (same scorers, same clips). A scorer that fails to load raises here with
    the process's message; if the process dies, every pending and later reward raises instead of
    hanging the trainer.
    """

    def __init__(
        self,
        specs: Sequence[str],
        workers: int = 1,
        device: str | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        context = multiprocessing.get_context("spawn")  # a fork would copy the trainer's threads' locks
        self._conn, child = context.Pipe()
        weights = None if weights is None else [float(w) for w in weights]
        self._process = context.Process(
            target=_serve, args=(child, list(specs), workers, device, weights), name="rewards", daemon=True
        )
        self._process.start()
        child.close()
        try:
            status, message = self._conn.recv()
        except EOFError:
            self._process.join()
            status, message = (
                "error",
                (
                    f"the reward process exited (code {self._process.exitcode}) before loading its scorers; "
                    "its traceback is above (a script that starts it needs an `if __name__ == '__main__':` "
                    "guard)"
                ),
            )
        if status != "ready":
            self._process.join()
            raise ValueError(message)
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count()
        self._send = threading.Lock()
        reader = threading.Thread(
            target=_deliver,
            args=(self._conn, self._pending, self._process),  # not self: collecting self stops the process
            name="rewards-reader",
            daemon=True,
        )
        reader.start()
        self._finalizer = weakref.finalize(self, _shut_down, self._conn, self._process, reader)

    def submit(self, audio: np.ndarray, rate: int, prompts: Sequence[Prompt]) -> Future:
        """Score in the reward process; ``.result()`` gives ``Rewards.__call__``'s."""
        future: Future = Future()
        key = next(self._ids)
        self._pending[key] = future
        try:
            with self._send:
                self._conn.send((key, np.asarray(audio), rate, list(prompts)))
        except OSError as e:  # the process is gone (and the reader may have failed this future already)
            if self._pending.pop(key, None) is not None:
                future.set_exception(RuntimeError(f"the reward process is gone: {e}"))
        return future

    def close(self) -> None:
        """Stop the process once it has sent the rewards it was given; also done when this is collected."""
        self._finalizer()


def _serve(
    conn, specs: list[str], workers: int, device: str | None = None, weights: list[float] | None = None
) -> None:
    """The reward process: load the scorers, then score each job as it comes, sending results back in
    the order they finish."""
    try:
        rewards = Rewards(specs, workers=workers, device=device, weights=weights)
    except Exception as e:  # reported to the parent, which raises it
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", ""))
    send = threading.Lock()

    def reply(key: int, future: Future) -> None:
        error = future.exception()
        message = (key, True, future.result()) if error is None else (key, False, _picklable(error))
        with send:
            conn.send(message)

    while True:
        try:
            job = conn.recv()
        except EOFError:
            break
        if job is None:
            break
        key, audio, rate, prompts = job
        rewards.submit(audio, rate, prompts).add_done_callback(lambda f, key=key: reply(key, f))
    rewards._pool.shutdown(wait=True)


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _deliver(conn, pending: dict[int, Future], process) -> None:
    """The parent's reader: hand each result to its future; when the process is gone, fail them all."""
    while True:
        try:
            key, ok, value = conn.recv()
        except (EOFError, OSError):
            break
        future = pending.pop(key)
        future.set_result(value) if ok else future.set_exception(value)
    process.join(timeout=5)
    for key in list(pending):
        future = pending.pop(key, None)  # None: submit found the process gone and failed it itself
        if future is not None:
            future.set_exception(
                RuntimeError(f"the reward process exited (code {process.exitcode}) before scoring this batch")
            )


def _shut_down(conn, process, reader: threading.Thread) -> None:
    """Stop the reward process, then wait for the reader to see its end of the pipe close: a reader
    left running into interpreter shutdown would be killed mid-work (and take the process with it)."""
    with contextlib.suppress(OSError):  # already gone
        conn.send(None)
    process.join(timeout=30)
    if process.is_alive():
        process.kill()
        process.join()
    if reader is not threading.current_thread():
        reader.join(timeout=30)
    conn.close()
