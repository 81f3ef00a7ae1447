"""Benchmark the request queue: throughput, overhead, poll latency and 429s.

It plays the stress scenario of `tests/test_queue_stress.py` at full size (8
threads x 30 history calls on two API keys sharing an application key, polls and
a config flow) against the local Ambient API on loopback, then times the queue's
own bookkeeping with a no-op call and no spacing. It prints one table, with the
goal of each figure, and exits non-zero when a goal is missed.

Throughput is measured from the server's log: for each API key, the requests that
arrived from its first request to its last history page, while the backfill kept
work queued the whole time.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
import math
import os
import statistics
import sys
import time

from custom_components.ambient_weather.request_queue import (
    MIN_SPACING,
    ApplicationKeyBudget,
    Priority,
    RequestQueue,
)
from local_api import LocalAmbientServer
from tests.test_queue_stress import (
    API_KEYS,
    APPLICATION_KEY,
    MAC,
    THREADS,
    StressRun,
    run_stress,
)

CALLS_PER_THREAD = int(os.environ.get("AMBIENT_STRESS_CALLS", "30"))
# The whole run stops by itself after this many seconds, goals met or not.
RUN_TIMEOUT = 600.0
OVERHEAD_REQUESTS = 20_000
OVERHEAD_ROUNDS = 5


@dataclass(frozen=True)
class Figure:
    """One line of the report."""

    name: str
    value: float
    unit: str
    goal: str
    met: bool


def requests_per_second(server: LocalAmbientServer, api_key: str) -> float:
    """Return the rate at which the server saw one key's requests while it was busy."""
    arrivals = [r.monotonic for r in server.log if r.api_key == api_key]
    history = [
        r.monotonic
        for r in server.log
        if r.api_key == api_key and r.path.startswith("/v1/devices/")
    ]
    busy = [t for t in arrivals if t <= history[-1]]
    return (len(busy) - 1) / (busy[-1] - busy[0])


def p95(values: list[float]) -> float:
    """Return the 95th percentile of at least two values."""
    return statistics.quantiles(values, n=20, method="inclusive")[18]


async def cpu_seconds(work: Callable[[], Awaitable[object]]) -> float:
    """Return the CPU time this thread spends running `work()`."""
    started = time.thread_time()
    await work()
    return time.thread_time() - started


async def overhead_per_request(callers: int) -> float:
    """Return the queue's own CPU time per request, in microseconds.

    `callers` wait at a time, in batches, first awaiting a no-op call directly,
    then through a queue with no spacing and a budget too large to matter; the
    difference is the queue's bookkeeping: queueing, the worker, the wake-ups.
    """

    async def answer(n: int) -> int:
        """Answer at once."""
        return n

    async def direct(batch: range) -> None:
        """Await the calls of one batch directly."""
        await asyncio.gather(*map(answer, batch))

    async def queued(queue: RequestQueue, batch: range) -> None:
        """Await the calls of one batch through the queue."""
        await asyncio.gather(
            *(queue.submit(answer, n, priority=Priority.BACKFILL) for n in batch)
        )

    per_request = []
    for _ in range(OVERHEAD_ROUNDS):
        queue = RequestQueue(
            "overhead", ApplicationKeyBudget(rate=OVERHEAD_REQUESTS), spacing=0.0
        )
        queue.start()
        batches = [
            range(first, first + callers)
            for first in range(0, OVERHEAD_REQUESTS, callers)
        ]
        spent = 0.0
        for batch in batches:
            spent += await cpu_seconds(partial(queued, queue, batch))
            spent -= await cpu_seconds(partial(direct, batch))
        await queue.async_stop()
        per_request.append(spent / OVERHEAD_REQUESTS)
    return statistics.median(per_request) * 1e6


async def stress() -> tuple[LocalAmbientServer, StressRun]:
    """Play the full stress scenario against a fresh local server."""
    server = LocalAmbientServer([(api_key, APPLICATION_KEY) for api_key in API_KEYS])
    origin = await server.start()
    try:
        run = await run_stress(server, origin, CALLS_PER_THREAD)
    finally:
        await server.stop()
    return server, run


def figures(
    server: LocalAmbientServer, run: StressRun, overheads: dict[int, float]
) -> list[Figure]:
    """Return the report's figures with their goals."""
    rows = []
    for n, api_key in enumerate(API_KEYS):
        ratio = requests_per_second(server, api_key)
        rows.append(
            Figure(
                f"requests/s of key {n + 1} / 1/s bound",
                ratio,
                "",
                ">= 0.95",
                ratio >= 0.95,
            )
        )
    gap = min(server.min_gap_per_api_key().values())
    rows.append(
        Figure("shortest gap between a key's requests", gap, " s", ">= 1.0", gap >= 1.0)
    )
    rejected = server.count(429)
    rows.append(Figure("429 answers", rejected, "", "0", rejected == 0))
    for callers, overhead in overheads.items():
        rows.append(
            Figure(
                f"queue overhead per request, {callers} waiting",
                overhead,
                " us",
                "< 1000",
                overhead < 1000,
            )
        )
    poll_wait = p95(run.poll_waits)
    rows.append(
        Figure(
            "p95 wait of a poll behind backfill", poll_wait, " s", "< 2", poll_wait < 2
        )
    )
    flow_wait = math.inf if run.config_flow_wait is None else run.config_flow_wait
    rows.append(
        Figure(
            "wait of the config-flow validation", flow_wait, " s", "< 2", flow_wait < 2
        )
    )
    wrong = len(run.wrong_answers)
    rows.append(Figure("wrong answers", wrong, "", "0", wrong == 0))
    return rows


def report(server: LocalAmbientServer, run: StressRun, rows: list[Figure]) -> str:
    """Return the scenario, the figures and the queues' own metrics as text."""
    history = server.count(200, path_prefix=f"/v1/devices/{MAC}")
    scenario = (
        f"Request queue: {THREADS} threads x {CALLS_PER_THREAD} history calls, "
        f"{len(API_KEYS)} API keys on one application key, spacing {MIN_SPACING} s"
    )
    volume = (
        f"{history} history pages and {len(run.poll_waits)} polls behind backfill "
        f"in {run.backfill_seconds:.1f} s; {len(server.log)} requests in all"
    )
    lines = [scenario, volume, "", f"{'figure':<42} {'value':>12}  {'goal':<8} met"]
    for row in rows:
        value = f"{row.value:.3f}" if isinstance(row.value, float) else str(row.value)
        met = "yes" if row.met else "NO"
        lines.append(f"{row.name:<42} {value + row.unit:>12}  {row.goal:<8} {met}")
    lines.append("")
    for queue in run.queues:
        metrics = queue.metrics.as_dict()
        lines.append(
            f"{queue.name}: sent {metrics['sent']}, merged {metrics['merged']}, "
            f"retried {metrics['retried']}, 429 {metrics['rate_limited']}, "
            f"errors {sum(metrics['errors'].values())}, "
            f"wait p50 {metrics['wait_p50']:.2f} s, p95 {metrics['wait_p95']:.2f} s"
        )
    return "\n".join(lines) + "\n"


async def main() -> int:
    """Run the benchmark, print its report and return the exit status."""
    async with asyncio.timeout(RUN_TIMEOUT):
        server, run = await stress()
        overheads = {
            callers: await overhead_per_request(callers) for callers in (1, THREADS)
        }
    rows = figures(server, run, overheads)
    sys.stdout.write(report(server, run, rows))
    return 0 if all(row.met for row in rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
