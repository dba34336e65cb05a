"""Batching of concurrent requests for `q3 serve`: one scheduler thread owns the model.

Request handler threads `submit` a `Work` and consume its events (`Work.events`: tokens as they
are produced, then the result or an error). The scheduler takes the oldest queued work and every
other queued work with the same batching key (sampling settings that can share one engine call),
up to `max_batch` of them, in arrival order, and hands them to `run(batch)` at once; works with key
None (e.g. constrained JSON decoding) run alone. Work queued behind a running batch waits for it:
batches are static (a running batch takes no newcomers). A work withdrawn while still queued
(client gone, shutdown) never runs. `close()` ends the thread once the running batch is over (shutdown:
no torch work may be left running when the interpreter exits). An idle scheduler that gets a request waits up to `window_s`
for more to arrive (clients "at the same moment" reach the queue a few milliseconds apart).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from q3.log import get_logger

log = get_logger("train.serve")


class Busy(Exception):
    """Too many requests queued."""


@dataclass(eq=False)
class Work:
    """One request for the scheduler. `cancelled()` is polled by the run function between tokens."""
    payload: Any                                # what `run` needs (the parsed request, its seed, ...)
    key: Hashable | None                        # works with equal keys may share a batch; None: alone
    cancelled: Callable[[], bool] = lambda: False
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    finished: threading.Event = field(default_factory=threading.Event)

    def token(self, *item) -> None:
        if not self.finished.is_set():
            self.events.put(("token", *item))

    def finish(self, result) -> None:
        if not self.finished.is_set():
            self.finished.set()
            self.events.put(("done", result))

    def fail(self, error: BaseException) -> None:
        if not self.finished.is_set():
            self.finished.set()
            self.events.put(("error", error))


class Scheduler:
    """FIFO queue of `Work`, drained in batches by one daemon thread calling `run(batch)`.

    `run` must `finish` (or `fail`) every work it is given; whatever it leaves unfinished, or raises,
    fails those works. Counters (for /health): `batches` run, `batched_requests` in them,
    `largest` batch."""

    def __init__(self, run: Callable[[list[Work]], None], max_batch: int = 8, max_waiting: int = 64,
                 cancelled_result: Callable[[Work], Any] = lambda w: None, window_s: float = 0.0):
        self.run = run
        self.window_s = window_s
        self.max_batch = max(1, int(max_batch))
        self.max_waiting = max_waiting
        self.cancelled_result = cancelled_result
        self.cv = threading.Condition()
        self.queue: deque[Work] = deque()
        self.running: list[Work] = []
        self.batches = self.batched_requests = self.largest = 0
        self.closing = False
        self.thread = threading.Thread(target=self._loop, name="q3-serve-scheduler", daemon=True)
        self.thread.start()

    def submit(self, work: Work) -> Work:
        with self.cv:
            if len(self.queue) >= self.max_waiting:
                raise Busy(f"server busy: {len(self.queue)} requests waiting; retry later")
            self.queue.append(work)
            self.cv.notify_all()
        return work

    def withdraw(self, work: Work) -> bool:
        """Take a still-queued work off the queue (finished as cancelled); False once it runs."""
        with self.cv:
            if work not in self.queue:
                return False
            self.queue.remove(work)
        work.finish(self.cancelled_result(work))
        return True

    def close(self, timeout: float) -> bool:
        """Take no more work (queued works end as cancelled); wait up to `timeout` s for the running
        batch to end. True when the scheduler thread has ended."""
        with self.cv:
            self.closing = True
            left, self.queue = list(self.queue), deque()
            self.cv.notify_all()
        for w in left:
            w.finish(self.cancelled_result(w))
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def stats(self) -> dict:
        with self.cv:
            return {"batches": self.batches, "batched_requests": self.batched_requests,
                    "largest_batch": self.largest, "queued": len(self.queue), "running": len(self.running),
                    "max_batch_requests": self.max_batch}

    def _take(self) -> list[Work] | None:
        with self.cv:
            while True:
                while not self.queue and not self.closing:
                    self.cv.wait()
                if self.closing:
                    return None
                if self.window_s > 0 and self.queue[0].key is not None:
                    deadline = time.monotonic() + self.window_s
                    while 0 < len(self.queue) < self.max_batch and not self.closing and \
                            (left := deadline - time.monotonic()) > 0:
                        self.cv.wait(left)
                if self.queue and not self.closing:   # a withdraw() or close() may have emptied it meanwhile
                    break
            head = self.queue.popleft()
            batch = [head]
            if head.key is not None:
                for w in list(self.queue):
                    if len(batch) >= self.max_batch:
                        break
                    if w.key == head.key:
                        self.queue.remove(w)
                        batch.append(w)
            live = [w for w in batch if not w.cancelled()]
            self.running = live
            if live:
                self.batches += 1
                self.batched_requests += len(live)
                self.largest = max(self.largest, len(live))
        for w in batch:
            if w not in live:
                w.finish(self.cancelled_result(w))
        return live

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            try:
                if batch:
                    self.run(batch)
            except BaseException as e:          # noqa: BLE001 - reported to every request of the batch
                for w in batch:
                    w.fail(e)
            finally:
                for w in batch:
                    w.fail(RuntimeError("the batch ended without a result for this request"))
                with self.cv:
                    self.running = []


def wait(work: Work, on_token: Callable[..., None] | None, poll: Callable[[], bool], withdraw: Callable[[], bool],
         poll_s: float = 0.25):
    """In the request's thread: pass its tokens to `on_token(*item)` as they come and return the
    result (or raise the error). Every `poll_s` without an event `poll()` is asked whether the
    request was abandoned; if so the work is withdrawn when still queued (a running work sees its
    own cancellation through `Work.cancelled`)."""
    while True:
        try:
            ev = work.events.get(timeout=poll_s)
        except queue.Empty:
            if poll():
                withdraw()
            continue
        if ev[0] == "token":
            if on_token is not None:
                on_token(*ev[1:])
        elif ev[0] == "done":
            return ev[1]
        else:
            raise ev[1]


__all__ = ["Busy", "Scheduler", "Work", "wait"]
