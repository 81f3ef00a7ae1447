"""The backfill benchmark's figures, goals and printed report.

`Run` holds what one job measured; `report` turns it into the table of figures
against the issue's goals (each PASS or FAIL), how each figure was measured, a
sampled profile of the watched threads, and what ran during the worst stalls.
"""

from collections import Counter
from dataclasses import dataclass
import itertools
import time
import tracemalloc
from typing import Any

from custom_components.ambient_weather.request_queue import MIN_SPACING

from .api_process import Served
from .cpu_meter import WORKER
from .sampler import StackSampler, describe, thread_cpu
from .stalls import Stall, StallReport

HISTORY_PREFIX = "/v1/devices/"
DEVICES_PATH = "/v1/devices"

GOAL_RATIO = 0.95
GOAL_CPU_SHARE = 0.10
GOAL_MEMORY = 50 * 2**20
GOAL_STALL = 0.020
MB = 2**20
TOP = 6


@dataclass(frozen=True, kw_only=True)
class Clocks:
    """The clocks read at the start and at the end of the job."""

    wall: float
    process: float
    loop: float
    recorder: float

    @classmethod
    def read(cls, loop_ident: int, recorder_ident: int) -> Clocks:
        """Read every clock now."""
        return cls(
            wall=time.monotonic(),
            process=time.process_time(),
            loop=thread_cpu(loop_ident),
            recorder=thread_cpu(recorder_ident),
        )

    def __sub__(self, other: Clocks) -> Clocks:
        """Return how far each clock advanced since `other`."""
        return Clocks(
            wall=self.wall - other.wall,
            process=self.process - other.process,
            loop=self.loop - other.loop,
            recorder=self.recorder - other.recorder,
        )


@dataclass(kw_only=True)
class Run:
    """Everything one backfill job measured, and how it was set up."""

    days: int
    loop_days: int
    poll_every: float
    profiled: bool
    load: tuple[float, float]
    cores: int
    schedstat: bool
    event: dict[str, Any]
    plan: dict[str, Any]
    spent: Clocks
    started: float
    ended: float
    log: list[Served]
    sampler: StackSampler
    worker_cpu: dict[str, float]
    loop_parts: dict[str, float]
    stalls: StallReport
    gc_pauses: list[float]
    # faulthandler dumps of stalls over the goal, and the busy threads in them.
    dumps: tuple[int, Counter[str]]
    traced_peak: int | None
    traced_sites: list[tracemalloc.Statistic]

    def served(self, prefix: str, *, exact: bool = False) -> list[Served]:
        """Return the requests under a path that arrived during the job."""
        return [
            s
            for s in self.log
            if self.started <= s.arrival <= self.ended
            and (s.path == prefix if exact else s.path.startswith(prefix))
        ]

    def growth(self, gauge: str) -> float:
        """Return how far a sampled gauge rose above its value before the job."""
        return self.sampler.peak[gauge] - self.sampler.base[gauge]

    @property
    def cpu_floor(self) -> float:
        """Return our CPU timed exactly: the worker's and our pieces on the loop."""
        return self.worker_cpu[WORKER] + sum(self.loop_parts.values())

    @property
    def cpu_ceiling(self) -> float:
        """Return the worker's CPU plus all of the loop's, ours or not."""
        return self.worker_cpu[WORKER] + self.spent.loop

    @property
    def cpu_sampled(self) -> float:
        """Return the worker's CPU plus the loop's share with frames of ours."""
        loop = self.sampler.profiles["loop"]
        return self.worker_cpu[WORKER] + self.spent.loop * loop.ours_share


@dataclass(frozen=True)
class Figure:
    """One line of the table."""

    name: str
    value: str
    goal: str = ""
    met: bool | None = None

    def __str__(self) -> str:
        """Return the line."""
        verdict = "" if self.met is None else ("PASS" if self.met else "FAIL")
        return f"{self.name:<46} {self.value:>9}  {self.goal:<9} {verdict}".rstrip()


def figures(run: Run) -> list[Figure]:
    """Return the table's lines."""
    pages = [s.arrival for s in run.served(HISTORY_PREFIX)]
    span = pages[-1] - pages[0] if len(pages) > 1 else 0.0
    paging = [s for s in run.served("") if pages[0] <= s.arrival <= pages[-1]]
    page_rate = (len(pages) - 1) / span if span else 0.0
    request_rate = (len(paging) - 1) / span if span else 0.0
    floor, ceiling = run.cpu_floor / run.spent.wall, run.cpu_ceiling / run.spent.wall
    memory = run.growth("rss")
    stalls = run.stalls
    worst = stalls.worst.late if stalls.worst else 0.0
    worst_net = stalls.worst_net.net if stalls.worst_net else 0.0
    rejected = sum(s.status == 429 for s in run.log)
    ratio, cpu, mb, ms = f">= {GOAL_RATIO}", f"<= {GOAL_CPU_SHARE:.0%}", "MB", "ms"
    rows = [
        Figure(
            "pages/s / the 1 req/s bound",
            f"{page_rate:.3f}",
            ratio,
            page_rate >= GOAL_RATIO,
        ),
        Figure(
            f"pages/s / the queue's spacing (1/{MIN_SPACING} s)",
            f"{page_rate * MIN_SPACING:.3f}",
            ratio,
            page_rate * MIN_SPACING >= GOAL_RATIO,
        ),
        Figure("all requests/s (pages + polls) / 1 req/s", f"{request_rate:.3f}"),
        Figure(
            "our CPU outside waiting / run time",
            f"{floor:.1%}-{ceiling:.1%}",
            cpu,
            ceiling <= GOAL_CPU_SHARE,
        ),
        Figure(
            "peak RSS increase during the job",
            f"{memory / MB:.1f} {mb}",
            f"<= {GOAL_MEMORY // MB} {mb}",
            memory <= GOAL_MEMORY,
        ),
    ]
    if run.traced_peak is not None:
        rows.append(
            Figure(
                "peak Python heap increase (tracemalloc)",
                f"{run.traced_peak / MB:.1f} {mb}",
                f"<= {GOAL_MEMORY // MB} {mb}",
                run.traced_peak <= GOAL_MEMORY,
            )
        )
    stall_goal = f"<= {GOAL_STALL * 1000:.0f} {ms}"
    rows.append(
        Figure(
            "longest event-loop stall",
            f"{worst * 1000:.1f} {ms}",
            stall_goal,
            worst <= GOAL_STALL,
        )
    )
    if run.schedstat:
        rows.append(
            Figure(
                "  the same, less the loop's waits for a CPU",
                f"{worst_net * 1000:.1f} {ms}",
                stall_goal,
                worst_net <= GOAL_STALL,
            )
        )
    arrivals = [s.arrival for s in run.served("")]
    gap = min((b - a for a, b in itertools.pairwise(arrivals)), default=0.0)
    rows += [
        Figure(
            "shortest gap between requests (server)", f"{gap:.3f} s", ">= 1 s", gap >= 1
        ),
        Figure("429 answers from the server", str(rejected), "0", not rejected),
    ]
    return rows


def report(run: Run) -> str:
    """Return the whole printed report."""
    event, plan = run.event, run.plan
    extra = f", plus a refresh every {run.poll_every:g} s" if run.poll_every else ""
    lines = [
        "",
        (
            f"Backfill benchmark: {run.days} days of one station from the local API "
            f"(recording looped over {run.loop_days} days), Home Assistant's recorder "
            f"on a SQLite file, the coordinator polling every 60 s{extra}"
        ),
        (
            f"Job {event['status']} in {run.spent.wall:.1f} s: "
            f"{len(run.served(HISTORY_PREFIX))} pages (plan {plan['pages']}, "
            f"estimated {plan['estimated_seconds']} s), {event['records']} records, "
            f"{event['hours']} hours; {len(run.served(DEVICES_PATH, exact=True))} "
            "polls during the job"
        ),
        (
            f"Machine: {run.cores} cores, load average {run.load[0]:.2f} at the "
            f"start, {run.load[1]:.2f} at the end"
        ),
        "",
        str(Figure("figure", "value", "goal", None)) + " result",
        *(str(figure) for figure in figures(run)),
        "",
        *method(run),
        *profile(run),
        *memory_sites(run),
        *stall_lines(run),
        "",
    ]
    return "\n".join(lines)


def method(run: Run) -> list[str]:
    """Return how the figures were measured, with the CPU breakdown."""
    worker, spent, stalls = run.worker_cpu, run.spent, run.stalls
    pages = max(len(run.served(HISTORY_PREFIX)), 1)
    worker_parts = [
        f"    {seconds:6.2f} s  {seconds / pages * 1000:5.1f} ms/page  {part}"
        for part, seconds in worker.items()
        if part != WORKER
    ]
    loop_parts = [
        f"    {seconds:6.2f} s  {seconds / pages * 1000:5.1f} ms/page  {part}"
        for part, seconds in run.loop_parts.items()
    ]
    sampled = []
    if run.profiled:
        loop = run.sampler.profiles["loop"]
        sampled.append(
            f"  sampled: worker + loop x {loop.ours_share:.1%} (busy loop samples "
            f"with a frame of ours: {loop.ours} of {loop.busy}) = "
            f"{run.cpu_sampled:.2f} s, {run.cpu_sampled / spent.wall:.1%}"
        )
    memory = "RSS (psutil) every ~50 ms, the peak less the RSS just before the job"
    if run.traced_peak is not None:
        memory += "; tracemalloc's peak of what was allocated during the job"
    net = (
        "; net: less the loop thread's run-queue wait (schedstat), while other "
        "processes held the cores"
        if run.schedstat
        else ""
    )
    gc_pauses = (
        f"{len(run.gc_pauses)} GC pauses, longest "
        f"{max(run.gc_pauses, default=0.0) * 1000:.1f} ms"
    )
    job = run.sampler.machine(run.started, run.ended)
    stolen = (
        f"; the hypervisor stole {job.stolen:.2f} s of CPU from the machine"
        if job is not None
        else ""
    )
    return [
        "How each figure was measured:",
        (
            "- rates: the server's arrival times of the job's history pages, first "
            "page to last; all requests adds the polls in that span"
        ),
        (
            f"- our CPU, low end: worker thread {worker[WORKER]:.2f} s (its "
            "thread_time around BackfillWorker.run), of which:"
        ),
        *worker_parts,
        "  + our pieces on the loop that never await, timed the same way:",
        *loop_parts,
        (
            f"  = {run.cpu_floor:.2f} s; high end: worker + all of the loop thread's "
            f"CPU ({spent.loop:.2f} s, its CPU clock, Home Assistant's share "
            f"included) = {run.cpu_ceiling:.2f} s; run {spent.wall:.1f} s"
        ),
        *sampled,
        (
            f"- not ours: recorder thread {spent.recorder:.2f} s CPU, its queue at "
            f"most {run.growth('backlog'):.0f} tasks above the start; whole process "
            f"{spent.process:.2f} s, of which the sampler {run.sampler.cpu:.2f} s; "
            "the API server runs in another process"
        ),
        f"- memory: {memory}",
        (
            f"- stalls: a task sleeping 10 ms on the loop woke {stalls.wakeups} "
            f"times; lateness p99 {stalls.quantile(0.99) * 1000:.1f} ms, "
            f"{stalls.over(GOAL_STALL)} later than {GOAL_STALL * 1000:.0f} ms "
            f"({stalls.over(GOAL_STALL, net=True)} net){net}; {gc_pauses}; "
            f"{stalls.over_goal_in_gc} of the {stalls.over_goal} wake-ups later "
            f"than the goal overlapped a GC pause{stolen}"
        ),
        "",
    ]


def profile(run: Run) -> list[str]:
    """Return where each watched thread's busy samples were, if profiled."""
    if not run.profiled:
        return []
    lines = [
        "Sampled profile (innermost frame of ours -> leaf; else of Home Assistant):"
    ]
    for name, thread in run.sampler.profiles.items():
        if not thread.busy:
            continue
        lines.append(
            f"  {name} thread: {thread.busy} busy of {thread.samples} samples, "
            f"{thread.ours_share:.0%} ours"
        )
        lines += [
            f"    {n / thread.busy:6.1%}  {describe(place)}"
            for place, n in thread.places.most_common(TOP)
        ]
    return [*lines, ""]


def memory_sites(run: Run) -> list[str]:
    """Return where the memory allocated during the job and still held was."""
    if not run.traced_sites:
        return []
    lines = ["Allocated during the job and still held at its end (tracemalloc):"]
    for site in run.traced_sites:
        frame = site.traceback[0]
        where = "/".join(frame.filename.rsplit("/", 3)[-3:])
        lines.append(
            f"  {site.size / MB:6.2f} MB in {site.count:7d} blocks  "
            f"{where}:{frame.lineno}"
        )
    return [*lines, ""]


def stall_lines(run: Run) -> list[str]:
    """Return what happened during the worst stalls."""
    lines: list[str] = []
    stalls = [("Worst stall", run.stalls.worst)]
    if run.schedstat and run.stalls.worst_net is not run.stalls.worst:
        stalls.append(("Worst stall net of CPU waits", run.stalls.worst_net))
    for title, stall in stalls:
        if stall is not None:
            lines += _stall(title, stall, run.started, profiled=run.profiled)
            lines += _machine(run, stall)
    if run.profiled:
        dumps, busy = run.dumps
        lines.append(
            f"Stalls over {GOAL_STALL * 1000:.0f} ms caught by the faulthandler "
            f"watchdog: {dumps}; threads not waiting when it fired:"
        )
        lines += [f"  {n:3d} x {place}" for place, n in busy.most_common(TOP)]
    return lines


def _machine(run: Run, stall: Stall) -> list[str]:
    """Return what the whole machine did around a stall, if it was read then."""
    span = run.sampler.machine(stall.at - stall.late - 0.01, stall.at)
    if span is None:
        return []
    line = (
        f"  the machine over the {(span.end - span.start) * 1000:.0f} ms around "
        f"it ({run.cores} cores, /proc/stat in 10 ms ticks): idle "
        f"{span.idle * 1000:.0f} ms, stolen by the hypervisor "
        f"{span.stolen * 1000:.0f} ms"
    )
    return [line]


def _stall(title: str, stall: Stall, started: float, *, profiled: bool) -> list[str]:
    """Return the lines describing one stall."""
    gc_pauses = ", ".join(f"{d * 1000:.1f}" for d in stall.gc_pauses) or "none"
    samples = f"; busy samples in it: {len(stall.samples)}" if profiled else ""
    lines = [
        (
            f"{title}: {stall.late * 1000:.1f} ms at +{stall.at - started:.1f} s: "
            f"the loop ran {stall.running * 1000:.1f} ms, waited for a CPU "
            f"{stall.starved * 1000:.1f} ms and for the GIL or a lock "
            f"{stall.waiting * 1000:.1f} ms; GC pauses in it (ms): {gc_pauses}"
            f"{samples}"
        )
    ]
    places = Counter(
        f"{s.thread} ({'ours' if s.ours else 'not ours'}): {describe(s.place)}"
        for s in stall.samples
    )
    lines += [f"  {n:3d} x {place}" for place, n in places.most_common(TOP)]
    return lines
