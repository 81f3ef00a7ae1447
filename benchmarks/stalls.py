"""Measure how long Home Assistant's event loop stalls, and why.

`LoopStallProbe` is a task on the loop that sleeps 10 ms over and over and
records how late each wake-up is. A late loop was doing one of three things:

- running: code on the loop took that long; the loop thread's CPU clock
  (`time.thread_time`) over the sleep and the stall, capped at the stall, tells
  how much of it the loop ran;
- waiting for a CPU: on a shared machine other processes take the cores; Linux
  counts the thread's run-queue wait (`/proc/.../schedstat`), and each stall is
  also given net of it, as that is not the process's doing;
- waiting for the GIL (or a lock): what is left. A thread that runs Python
  flat out, like the recorder importing statistics, takes the GIL each time the
  loop lets go of it, for up to the 5 ms switch interval.

The probe reads the schedstat once per wake-up (a read lets go of the GIL, and
every let-go can cost the loop a switch interval), so the CPU wait of a stall is
counted from the previous wake-up: it may include a wait in the sleep before.
`GcWatch` notes the garbage collector's pauses, which stop every thread.

The sampler needs the GIL, so it cannot see a stall in which some thread holds
the GIL and never lets go. `StallWatchdog` can: when profiling, the probe
re-arms `faulthandler.dump_traceback_later` at every wake-up, so faulthandler's
own C thread, which needs no GIL, writes every thread's stack when the loop has
not woken for the watchdog's threshold. The report names the threads that were
not waiting at that moment. Re-arming lets go of the GIL too, which is why it
is left out of a plain run.
"""

from array import array
import asyncio
from collections import Counter
from dataclasses import dataclass, field
import faulthandler
import gc
import os
import re
import statistics
import tempfile
import time
from typing import Any

from .sampler import Sample, StackSampler, waiting

_THREAD = re.compile(r"^Thread 0x([0-9a-f]+)(?: \[(.*)\])? \(most recent")
_FRAME = re.compile(r'^  File "(.*)", line \d+ in (.*)$')


class RunDelay:
    """A thread's time spent runnable but waiting for a CPU, from schedstat."""

    def __init__(self, native_id: int) -> None:
        """Open the thread's schedstat; without it, the delay reads as zero."""
        try:
            self._fd: int | None = os.open(
                f"/proc/self/task/{native_id}/schedstat", os.O_RDONLY
            )
        except OSError:
            self._fd = None

    @property
    def available(self) -> bool:
        """Return True when the kernel reports run-queue waits."""
        return self._fd is not None

    def read(self) -> float:
        """Return the seconds the thread has waited for a CPU so far."""
        if self._fd is None:
            return 0.0
        os.lseek(self._fd, 0, os.SEEK_SET)
        return int(os.read(self._fd, 128).split()[1]) / 1e9

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class GcWatch:
    """Record the garbage collector's pauses while installed."""

    def __init__(self) -> None:
        """Prepare an empty record."""
        self.pauses: list[tuple[float, float]] = []
        self._started = 0.0

    def install(self) -> None:
        """Start recording."""
        gc.callbacks.append(self._callback)

    def remove(self) -> None:
        """Stop recording."""
        gc.callbacks.remove(self._callback)

    def within(self, start: float, end: float) -> list[float]:
        """Return the durations of the pauses that overlap a time span."""
        return [d for at, d in self.pauses if at < end and at + d > start]

    def _callback(self, phase: str, _info: dict[str, Any]) -> None:
        """Note when a collection starts and how long it took."""
        now = time.monotonic()
        if phase == "start":
            self._started = now
        else:
            self.pauses.append((self._started, now - self._started))


class StallWatchdog:
    """Dump every thread's stack when the loop has not woken for a while."""

    def __init__(self, threshold: float, names: dict[int, str]) -> None:
        """Prepare a dump file; `names` maps thread idents to report names."""
        self.threshold = threshold
        self._names = names
        self._file = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in close()

    def arm(self) -> None:
        """Dump unless re-armed or disarmed within the threshold."""
        faulthandler.dump_traceback_later(self.threshold, file=self._file)

    def disarm(self) -> None:
        """Cancel the pending dump."""
        faulthandler.cancel_dump_traceback_later()

    def busy_threads(self) -> tuple[int, Counter[str]]:
        """Return the number of dumps, and the threads not waiting in them."""
        self._file.seek(0)
        dumps = self._file.read().split("Timeout (")[1:]
        busy: Counter[str] = Counter()
        for dump in dumps:
            for block in dump.split("\n\n"):
                if (place := self._busy_place(block)) is not None:
                    busy[place] += 1
        return len(dumps), busy

    def close(self) -> None:
        """Disarm and drop the dumps."""
        self.disarm()
        self._file.close()

    def _busy_place(self, block: str) -> str | None:
        """Return `thread: where` for one thread of a dump, or None if it waits."""
        lines = block.strip("\n").splitlines()
        header = next((m for line in lines if (m := _THREAD.match(line))), None)
        frames = [(m[1], m[2]) for line in lines if (m := _FRAME.match(line))]
        if header is None or not frames:
            return None
        ident = int(header[1], 16)
        name = self._names.get(ident, header[2] or "?")
        if waiting(*frames[0], loop=name == "loop"):
            return None
        inner = next(
            (f for f in frames if "custom_components/" in f[0]),
            next((f for f in frames if "homeassistant/" in f[0]), frames[0]),
        )
        where = _short(frames[0])
        if inner != frames[0]:
            where = f"{_short(inner)} -> {where}"
        return f"{name}: {where}"


def _short(frame: tuple[str, str]) -> str:
    """Return `package/module.py:function` for a dumped frame."""
    path, function = frame
    for root in ("custom_components/", "homeassistant/", "site-packages/"):
        if root in path:
            path = path.rsplit(root, 1)[1]
            break
    else:
        path = path.rsplit("/", 2)[-1]
    return f"{path}:{function}"


@dataclass(frozen=True, kw_only=True)
class Stall:
    """One late wake-up and what happened during it."""

    at: float
    late: float
    running: float
    starved: float
    gc_pauses: list[float]
    samples: list[Sample]

    @property
    def waiting(self) -> float:
        """Return the lateness neither running nor waiting for a CPU."""
        return max(0.0, self.late - self.running - self.starved)

    @property
    def net(self) -> float:
        """Return the lateness less the time the loop waited for a CPU."""
        return max(0.0, self.late - self.starved)


@dataclass
class StallReport:
    """What the stall probe saw."""

    wakeups: int = 0
    # Wake-ups later than the goal, and how many of those overlapped a GC pause.
    over_goal: int = 0
    over_goal_in_gc: int = 0
    # Arrays of doubles: a year's wake-ups take 0.5 MB rather than 2 MB.
    lateness: array[float] = field(default_factory=lambda: array("d"))
    net: array[float] = field(default_factory=lambda: array("d"))
    worst: Stall | None = None
    worst_net: Stall | None = None

    def over(self, goal: float, *, net: bool = False) -> int:
        """Return how many wake-ups were later than `goal`."""
        return sum(late > goal for late in (self.net if net else self.lateness))

    def quantile(self, q: float, *, net: bool = False) -> float:
        """Return a quantile of the lateness, in seconds."""
        values = self.net if net else self.lateness
        if len(values) < 2:
            return max(values, default=0.0)
        return statistics.quantiles(values, n=1000)[round(q * 1000) - 1]


class LoopStallProbe:
    """Sleep 10 ms at a time on the loop and record how late each wake-up is."""

    def __init__(
        self,
        sampler: StackSampler,
        gc_watch: GcWatch,
        run_delay: RunDelay,
        watchdog: StallWatchdog | None,
        *,
        goal: float,
        period: float = 0.01,
    ) -> None:
        """Prepare the probe; `run_delay` must read the loop thread's waits."""
        self.report = StallReport()
        self._goal = goal
        self._sampler = sampler
        self._gc = gc_watch
        self._run_delay = run_delay
        self._watchdog = watchdog
        self._period = period
        self._waited = 0.0

    async def run(self) -> None:
        """Measure until cancelled."""
        loop = asyncio.get_running_loop()
        self._waited = self._run_delay.read()
        try:
            while True:
                await self._measure_one(loop)
        finally:
            if self._watchdog is not None:
                self._watchdog.disarm()

    async def _measure_one(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sleep once and record how late the wake-up was."""
        due = loop.time() + self._period
        cpu = time.thread_time()
        if self._watchdog is not None:
            self._watchdog.arm()
        await asyncio.sleep(self._period)
        woke = loop.time()
        late = max(0.0, woke - due)
        running = min(late, time.thread_time() - cpu)
        waited, self._waited = self._waited, self._run_delay.read()
        starved = min(late - running, max(0.0, self._waited - waited))
        report = self.report
        report.wakeups += 1
        report.lateness.append(late)
        report.net.append(late - starved)
        if late > self._goal:
            report.over_goal += 1
            report.over_goal_in_gc += bool(self._gc.within(due, woke))
        if report.worst is None or late > report.worst.late:
            report.worst = self._stall(due, woke, late, running, starved)
        if report.worst_net is None or late - starved > report.worst_net.net:
            report.worst_net = self._stall(due, woke, late, running, starved)

    def _stall(
        self, due: float, woke: float, late: float, running: float, starved: float
    ) -> Stall:
        """Describe a stall from what the sampler and the GC watch saw in it."""
        return Stall(
            at=woke,
            late=late,
            running=running,
            starved=starved,
            gc_pauses=self._gc.within(due, woke),
            samples=self._sampler.recent(due, woke),
        )
