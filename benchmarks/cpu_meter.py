"""Exact CPU time of the backfill's own code, from the threads' CPU clocks.

`CpuMeter` wraps the worker's entry point and the synchronous pieces of our code
that run for every page, reading the calling thread's CPU clock
(`time.thread_time`) before and after each call. A thread blocked on the queue,
the loop or the recorder uses no CPU, so the worker's figure is its CPU outside
waiting. On the loop only pieces that never suspend can be timed this way (an
await would bill whatever the loop ran meanwhile); the rest of our loop time,
the request queue and the HTTP calls, is left to the sampler's estimate.

cProfile is no help here: since Python 3.12 it profiles every thread at once
and mixes their stacks.
"""

from collections import defaultdict
from collections.abc import Callable, Coroutine
import functools
import threading
import time
from typing import Any

import pytest

from custom_components.ambient_weather import api, backfill_worker
from custom_components.ambient_weather.backfill import BackfillManager
from custom_components.ambient_weather.backfill_worker import BackfillWorker
from custom_components.ambient_weather.statistics import HourlyStatistics

WORKER = "worker thread, all of BackfillWorker.run"
WORKER_PARTS: tuple[tuple[object, str, str], ...] = (
    (HourlyStatistics, "add", "fold records into hours"),
    (HourlyStatistics, "finish", "fold records into hours"),
    (BackfillWorker, "_import", "rows, then hand imports to the loop"),
    (BackfillWorker, "_fetch", "hand page requests to the queue"),
)
LOOP_PARTS: tuple[tuple[object, str, str], ...] = (
    (api, "_parse", "api._parse: decode and check each answer"),
    (BackfillManager, "_async_checkpoint", "checkpoint and progress sensor"),
)
LOOP_ASYNC_PARTS: tuple[tuple[object, str, str], ...] = (
    (backfill_worker, "_async_import", "_async_import: queue rows with the recorder"),
)


class CpuMeter:
    """Add up the CPU time of our code's pieces, by piece."""

    def __init__(self, on_worker_start: Callable[[int], None]) -> None:
        """Prepare to measure; `on_worker_start` learns the worker's thread."""
        self.worker: defaultdict[str, float] = defaultdict(float)
        self.loop: defaultdict[str, float] = defaultdict(float)
        self._on_worker_start = on_worker_start

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Wrap our code for the rest of the test."""
        run = self._timed(self.worker, WORKER, BackfillWorker.run)

        def measured_run(worker: BackfillWorker) -> None:
            """Run the worker, telling the probes which thread it runs in."""
            self._on_worker_start(threading.get_ident())
            run(worker)

        monkeypatch.setattr(BackfillWorker, "run", measured_run)
        for owner, name, part in WORKER_PARTS:
            func = getattr(owner, name)
            monkeypatch.setattr(owner, name, self._timed(self.worker, part, func))
        for owner, name, part in LOOP_PARTS:
            func = getattr(owner, name)
            monkeypatch.setattr(owner, name, self._timed(self.loop, part, func))
        for owner, name, part in LOOP_ASYNC_PARTS:
            func = getattr(owner, name)
            monkeypatch.setattr(owner, name, self._timed_async(part, func))

    @staticmethod
    def _timed[**P, R](
        into: defaultdict[str, float], part: str, func: Callable[P, R]
    ) -> Callable[P, R]:
        """Return `func`, adding the CPU time of each call to `part`."""

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            """Call the function on the thread's CPU clock."""
            started = time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                into[part] += time.thread_time() - started

        return wrapper

    def _timed_async[**P, R](
        self, part: str, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        """Return a coroutine function that never suspends, timed like `_timed`."""

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            """Await the coroutine on the thread's CPU clock."""
            started = time.thread_time()
            try:
                return await func(*args, **kwargs)
            finally:
                self.loop[part] += time.thread_time() - started

        return wrapper
