"""A sampling profiler for the threads of Home Assistant's process.

`StackSampler` is a thread that reads a few gauges, such as the process's RSS,
every 50 ms and keeps each one's peak. At the same pace it notes the whole
machine's idle time and the time the hypervisor stole from this virtual
machine's CPUs (`/proc/stat`), so a stall can be set against what the machine
was doing. Given threads to watch, it also reads
their Python stacks every 5 ms (`sys._current_frames`).

A sample is idle when the thread waits: the loop in its selector, a thread in a
`threading` wait or the recorder on its queue. Samples in the stall probe or the
GC watch are counted apart and left out of the rest. A busy sample is ours when
any frame on the stack belongs to the integration, so what our code calls into
(aiohttp, the recorder's API) counts as ours. The sampler can only run when it
holds the GIL, so samples fall where the watched threads release it; shares of
busy samples are estimates, which is why the report also gives exact CPU clocks.

Sampling stacks is not free: in this benchmark it made the garbage collector
run about four times as often, with pauses of up to ~25 ms instead of ~5 ms, so
the benchmark samples stacks only when asked to profile.
"""

from array import array
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
import os
import sys
import threading
import time
from types import CodeType, FrameType

from custom_components.ambient_weather import backfill as our_package

OUR_PREFIX = our_package.__file__.rsplit("/", 1)[0] + "/"
_ROOTS = (
    __file__.rsplit("/", 2)[0] + "/",
    "/site-packages/",
    f"/lib/python{sys.version_info.major}.{sys.version_info.minor}/",
)
# The stall probe and the GC watch; the worker's timing wrappers are not here,
# so the worker's samples keep their own frames.
PROBES_FILE = __file__.rsplit("/", 1)[0] + "/stalls.py"
SAMPLE_INTERVAL = 0.005
GAUGE_INTERVAL = 0.05
MAX_DEPTH = 60
RECENT_SAMPLES = 2000
# Leaf frames where a thread blocks in C without holding the GIL.
_WAITS = {
    ("selectors.py", "select"),
    ("threading.py", "wait"),
    ("recorder/core.py", "_run_event_loop"),
    ("concurrent/futures/thread.py", "_worker"),
    ("pycares/__init__.py", "_run_safe_shutdown_loop"),
}


def machine_cpu() -> tuple[float, float]:
    """Return the machine's idle and stolen CPU seconds so far, all CPUs summed."""
    with open("/proc/stat", "rb") as stat:
        # cpu  user nice system idle iowait irq softirq steal ...
        fields = stat.readline().split()
    tick = 1 / _CLOCK_TICKS
    return (int(fields[4]) + int(fields[5])) * tick, int(fields[8]) * tick


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class MachineSpan:
    """What the whole machine did over a span: idle and stolen CPU seconds."""

    start: float
    end: float
    idle: float
    stolen: float


def thread_cpu(ident: int) -> float:
    """Return the CPU seconds a thread of this process has used so far."""
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


def label(code: CodeType) -> str:
    """Return `module.function` for a code object, the module from its path."""
    path = code.co_filename.removesuffix(".py")
    for root in _ROOTS:
        if root in path:
            path = path.split(root, 1)[1]
            break
    return f"{path.replace('/', '.')}.{code.co_qualname}"


def _walk(
    frame: FrameType, *, seek_ours: bool
) -> tuple[bool, CodeType | None, CodeType | None]:
    """Return (in a probe, innermost frame of ours, innermost of Home Assistant).

    The walk stops as soon as it can: every frame it reaches becomes a frame
    object, garbage the collector must then look at.
    """
    home_assistant: CodeType | None = None
    current: FrameType | None = frame
    for _ in range(MAX_DEPTH):
        if current is None:
            break
        code = current.f_code
        if code.co_filename == PROBES_FILE:
            return True, None, None
        if code.co_filename.startswith(OUR_PREFIX):
            return False, code, home_assistant
        if home_assistant is None and current.f_globals.get("__name__", "").startswith(
            "homeassistant."
        ):
            home_assistant = code
            if not seek_ours:
                break
        current = current.f_back
    return False, None, home_assistant


def waiting(filename: str, function: str, *, loop: bool = False) -> bool:
    """Return True when a leaf frame is one where a thread waits, not runs.

    The event loop's thread only waits in its selector: blocked anywhere else,
    on a lock say, it stalls the loop.
    """
    waits = _WAITS if not loop else {("selectors.py", "select")}
    return any(function == name and filename.endswith(file) for file, name in waits)


# Where a busy sample was: the innermost frame of ours and the leaf, or the
# innermost frame of Home Assistant (else the leaf) and None. Code objects, not
# text, so that sampling allocates little and stirs the garbage collector less.
type Place = tuple[CodeType, CodeType | None]


def describe(place: Place) -> str:
    """Return a place as text."""
    outer, leaf = place
    return label(outer) if leaf is None else f"{label(outer)} -> {label(leaf)}"


@dataclass(frozen=True, slots=True)
class Sample:
    """One busy sample of a watched thread, kept for stall reports."""

    at: float
    thread: str
    place: Place
    ours: bool


@dataclass
class ThreadProfile:
    """The samples of one thread: how many were busy, how many ours, and where."""

    seek_ours: bool = True
    is_loop: bool = False
    samples: int = 0
    busy: int = 0
    ours: int = 0
    measuring: int = 0
    places: Counter[Place] = field(default_factory=Counter)

    def add(self, frame: FrameType) -> tuple[Place, bool] | None:
        """Count one sample; return where it was and if ours, or None if idle."""
        self.samples += 1
        leaf = frame.f_code
        if waiting(leaf.co_filename, leaf.co_name, loop=self.is_loop):
            return None
        probe, mine, home_assistant = _walk(frame, seek_ours=self.seek_ours)
        if probe:
            self.measuring += 1
            return None
        self.busy += 1
        if mine is not None:
            self.ours += 1
            place: Place = (mine, leaf)
        else:
            place = (home_assistant or leaf, None)
        self.places[place] += 1
        return place, mine is not None

    @property
    def ours_share(self) -> float:
        """Return the share of busy samples that were ours."""
        return self.ours / self.busy if self.busy else 0.0


class StackSampler:
    """Sample the stacks of watched threads, and some gauges, from a thread."""

    def __init__(
        self,
        threads: dict[str, int],
        gauges: dict[str, Callable[[], float]],
        *,
        never_ours: frozenset[str] = frozenset(),
    ) -> None:
        """Prepare to watch threads and gauges, each by name.

        Samples of the `never_ours` threads are only placed in Home Assistant,
        which keeps their stack walks short.
        """
        self._threads = dict(threads)
        self._gauges = gauges
        self.profiles = {
            name: ThreadProfile(
                seek_ours=name not in never_ours, is_loop=name == "loop"
            )
            for name in threads
        }
        self.base: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.cpu = 0.0
        # When the machine was read, and its idle and stolen seconds then.
        self._machine_at = array("d")
        self._machine_idle = array("d")
        self._machine_stolen = array("d")
        self._recent: deque[Sample] = deque(maxlen=RECENT_SAMPLES)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="bench stack sampler", daemon=True
        )

    def watch(self, name: str, ident: int) -> None:
        """Watch one more thread from the next sample on."""
        self.profiles.setdefault(name, ThreadProfile())
        self._threads = {**self._threads, name: ident}

    def start(self) -> None:
        """Read the gauges' baselines and start sampling."""
        self.base = {name: read() for name, read in self._gauges.items()}
        self.peak = dict(self.base)
        self._read_gauges()
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop.set()
        self._thread.join()

    def recent(self, start: float, end: float) -> list[Sample]:
        """Return the kept busy samples taken between two monotonic times."""
        # Copying a deque is one step under the GIL, so the sampler cannot
        # change it halfway.
        return [s for s in list(self._recent) if start <= s.at <= end]

    def machine(self, start: float, end: float) -> MachineSpan | None:
        """Return the machine's idle and stolen time over the reads around a span."""
        at = self._machine_at
        first = bisect_right(at, start) - 1
        last = bisect_left(at, end)
        if first < 0 or last >= len(at):
            return None
        return MachineSpan(
            start=at[first],
            end=at[last],
            idle=self._machine_idle[last] - self._machine_idle[first],
            stolen=self._machine_stolen[last] - self._machine_stolen[first],
        )

    def _run(self) -> None:
        """Sample until stopped."""
        started = time.thread_time()
        count = 0
        # Without threads to sample, wake only as often as the gauges need.
        interval = SAMPLE_INTERVAL if self._threads else GAUGE_INTERVAL
        every = round(GAUGE_INTERVAL / interval)
        while not self._stop.wait(interval):
            if self._threads:
                self._sample()
            count += 1
            if count % every == 0:
                self._read_gauges()
        self._read_gauges()
        self.cpu = time.thread_time() - started

    def _sample(self) -> None:
        """Take one sample of each watched thread."""
        frames = sys._current_frames()  # noqa: SLF001
        now = time.monotonic()
        for name, ident in self._threads.items():
            if (frame := frames.get(ident)) is None:
                continue
            if (busy := self.profiles[name].add(frame)) is not None:
                self._recent.append(Sample(now, name, *busy))

    def _read_gauges(self) -> None:
        """Keep the peak of each gauge, and note the machine's idle and stolen time."""
        for name, read in self._gauges.items():
            self.peak[name] = max(self.peak[name], read())
        idle, stolen = machine_cpu()
        self._machine_at.append(time.monotonic())
        self._machine_idle.append(idle)
        self._machine_stolen.append(stolen)
