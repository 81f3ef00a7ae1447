"""Every probe of one benchmark run, started and stopped together.

`Instruments` builds the CPU meter, the stall probe with its GC watch, and the
sampler of gauges; when profiling, the sampler also reads stacks and the stall
probe arms its faulthandler watchdog. It starts them just
before the job and stops them when it ends. The order matters: a full garbage
collection first, so that it stalls nothing it measures, and the probes only
after it.
"""

import asyncio
from collections.abc import Callable
import gc
import os
import threading
import tracemalloc

import psutil
import pytest

from homeassistant.components.recorder import Recorder
from homeassistant.core import HomeAssistant

from .backfill_report import GOAL_STALL, Clocks
from .cpu_meter import CpuMeter
from .sampler import StackSampler
from .stalls import GcWatch, LoopStallProbe, RunDelay, StallWatchdog

# The stall probe sleeps 10 ms: a wake-up later than the goal trips the watchdog.
WATCHDOG_THRESHOLD = 0.010 + GOAL_STALL
# With --tracemalloc, the report lists where the memory still held was allocated.
TRACED_SITES = 8


class Instruments:
    """The probes of one run; create, start and stop on the event loop."""

    def __init__(
        self,
        hass: HomeAssistant,
        recorder: Recorder,
        monkeypatch: pytest.MonkeyPatch,
        *,
        profile: bool,
        trace_memory: bool,
    ) -> None:
        """Build the probes and wrap our code for the CPU meter."""
        assert recorder.ident is not None, "the recorder thread is not running"
        self._hass = hass
        self._trace_memory = trace_memory
        self._loop_ident = threading.get_ident()
        self._recorder_ident = recorder.ident
        self._names = {self._loop_ident: "loop", recorder.ident: "recorder"}
        process = psutil.Process()
        self.sampler = StackSampler(
            {"loop": self._loop_ident, "recorder": recorder.ident} if profile else {},
            {
                "rss": lambda: process.memory_info().rss,
                "backlog": lambda: recorder.backlog,
            },
            never_ours=frozenset({"recorder"}),
        )
        self.meter = CpuMeter(self._worker_started(profile=profile))
        self.meter.install(monkeypatch)
        self.gc_watch = GcWatch()
        self._run_delay = RunDelay(threading.get_native_id())
        # The watchdog lets go of the GIL at every wake-up: only when profiling.
        self._watchdog = StallWatchdog(WATCHDOG_THRESHOLD, self._names)
        self.probe = LoopStallProbe(
            self.sampler,
            self.gc_watch,
            self._run_delay,
            self._watchdog if profile else None,
            goal=GOAL_STALL,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.before: Clocks | None = None
        self.after: Clocks | None = None
        self.load: tuple[float, float] = (0.0, 0.0)
        self.schedstat = self._run_delay.available
        self.traced_peak: int | None = None
        self.traced_sites: list[tracemalloc.Statistic] = []
        self.dumps = self._watchdog.busy_threads()

    def start(self) -> None:
        """Collect garbage, then start every probe and read the clocks."""
        gc.collect()
        if self._trace_memory:
            tracemalloc.start()
        self.gc_watch.install()
        self.sampler.start()
        self._tasks.append(
            self._hass.async_create_background_task(
                self.probe.run(), "bench stall probe"
            )
        )
        self.load = (os.getloadavg()[0], 0.0)
        self.before = Clocks.read(self._loop_ident, self._recorder_ident)

    def add_task(self, task: asyncio.Task[None]) -> None:
        """Cancel this task with the probes."""
        self._tasks.append(task)

    async def stop(self) -> None:
        """Read the clocks, then stop every probe and keep what they saw."""
        self.after = Clocks.read(self._loop_ident, self._recorder_ident)
        self.load = (self.load[0], os.getloadavg()[0])
        if self._trace_memory:
            self.traced_peak = tracemalloc.get_traced_memory()[1]
            self.traced_sites = tracemalloc.take_snapshot().statistics("lineno")[
                :TRACED_SITES
            ]
            tracemalloc.stop()
        self.sampler.stop()
        self.gc_watch.remove()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._run_delay.close()
        self.dumps = self._watchdog.busy_threads()
        self._watchdog.close()

    def _worker_started(self, *, profile: bool) -> Callable[[int], None]:
        """Return what to do when the worker thread starts."""

        def started(ident: int) -> None:
            """Name the worker for the watchdog, and sample it if profiling."""
            self._names[ident] = "worker"
            if profile:
                self.sampler.watch("worker", ident)

        return started
