"""One worker runs the model for all requests, in batches of whatever is waiting.

Requests queue their input and await the result; the worker takes everything queued (up to a
batch), runs it in a thread, and answers each request. While it is busy, new requests gather
into the next batch, so batching adds no waiting when the server is idle. Admission is
bounded: past ``max_in_flight`` requests, ``admit`` refuses immediately.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import anyio.to_thread


class ServerBusy(Exception):
    """Too many requests are already waiting for the model."""


class ModelWorker:
    """Batches model calls by kind (``text``, ``image``, ...); each kind maps to a function
    from a list of inputs to a list of outputs."""

    def __init__(self, runners: dict[str, Callable[[list], Sequence]], max_batch: int, max_in_flight: int) -> None:
        self.runners = runners
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.batches_run = 0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Holds one of the ``max_in_flight`` places for the duration of a request."""
        if self.in_flight >= self.max_in_flight:
            raise ServerBusy(f"the server is busy ({self.in_flight} requests in progress); retry shortly")
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def _ensure_running(self) -> asyncio.Queue:
        # The worker lives in the event loop that serves requests; a new loop (a restarted
        # server, a test client) gets a new queue and worker.
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run())
        return self._queue

    async def submit(self, kind: str, item: Any) -> Any:
        queue = self._ensure_running()
        future = asyncio.get_running_loop().create_future()
        queue.put_nowait((kind, item, future))
        return await future

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        queue = self._queue
        while True:
            waiting = [await queue.get()]
            while len(waiting) < self.max_batch and not queue.empty():
                waiting.append(queue.get_nowait())
            by_kind: dict[str, list] = defaultdict(list)
            for kind, item, future in waiting:
                if not future.cancelled():  # the client went away
                    by_kind[kind].append((item, future))
            for kind, entries in by_kind.items():
                await self._run_batch(kind, entries)

    async def _run_batch(self, kind: str, entries: list) -> None:
        try:
            results = await anyio.to_thread.run_sync(self.runners[kind], [item for item, _ in entries])
            self.batches_run += 1
        except Exception as exc:  # every waiting request learns of the failure
            for _, future in entries:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(entries, results):
            if not future.done():
                future.set_result(result)
