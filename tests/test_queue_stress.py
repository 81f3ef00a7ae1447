"""The request queue under load, against the local Ambient API over real HTTP.

Two API keys share one application key. Eight threads page through history
through the thread-safe bridge, a loop task per key polls, and a config flow
validates the account, all at once. The server enforces Ambient's limits and
answers 429 as Ambient does; it must see no violation, and every caller must get
the right answer.

`AMBIENT_STRESS_CALLS` sets the history calls per thread: a few in the test suite,
30 in `scripts/bench_queue`, which plays the same scenario and reports figures.
"""

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
import os
import random
import time

import aiohttp
import pytest

from custom_components.ambient_weather.api import (
    HISTORY_PAGE_LIMIT,
    AmbientClient,
    Record,
)
from custom_components.ambient_weather.request_queue import (
    ApplicationKeyBudget,
    Priority,
    RequestQueue,
)
from local_api import LocalAmbientServer, station_a

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("socket_enabled")]

API_KEYS = (
    "stress-api-key-one-4d1f6a0b2c3e5d7f9a1b3c5d7e9f0a2b",
    "stress-api-key-two-8e2a4c6e8a0c2e4a6c8e0a2c4e6a8c0e",
)
APPLICATION_KEY = "stress-app-key-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
MAC = station_a().mac_address
THREADS = 8
CALLS_PER_THREAD = int(os.environ.get("AMBIENT_STRESS_CALLS", "4"))
# One poll every POLL_INTERVAL seconds across the account: each key's poller
# waits twice as long, and the two take turns.
POLL_INTERVAL = 2.0
# Far longer than any answer takes; only a hang would use it up.
BRIDGE_TIMEOUT = 90.0


class StressRun:
    """The scenario on two keys' queues, and what each caller got."""

    def __init__(
        self,
        server: LocalAmbientServer,
        clients: list[AmbientClient],
        calls_per_thread: int,
    ) -> None:
        """Prepare a queue per client, sharing one application-key budget."""
        budget = ApplicationKeyBudget()
        self.server = server
        self.clients = clients
        self.queues = [RequestQueue(f"key {n}", budget) for n in range(len(clients))]
        self.calls_per_thread = calls_per_thread
        self.newest_end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        self.wrong_answers: list[str] = []
        self.poll_waits: list[float] = []
        self.config_flow_wait: float | None = None
        self.backfill_seconds = 0.0
        self._backfill_done = asyncio.Event()

    async def play(self) -> None:
        """Run the threads, the polls and the config flow until the pages are in."""
        loop = asyncio.get_running_loop()
        for queue in self.queues:
            queue.start()
        with ThreadPoolExecutor(THREADS, thread_name_prefix="backfill") as pool:
            try:
                started = time.monotonic()
                loop_tasks = [
                    asyncio.create_task(self._poll(key))
                    for key in range(len(self.queues))
                ]
                loop_tasks.append(asyncio.create_task(self._validate()))
                await asyncio.gather(
                    *(
                        loop.run_in_executor(pool, self._backfill, thread)
                        for thread in range(THREADS)
                    )
                )
                self.backfill_seconds = time.monotonic() - started
                self._backfill_done.set()
                await asyncio.gather(*loop_tasks)
            finally:
                # Stopping the queues releases any thread still waiting.
                for queue in self.queues:
                    await queue.async_stop()

    def _backfill(self, thread: int) -> None:
        """Fetch one thread's pages through the bridge, one after another."""
        key = thread % len(self.queues)
        for call in range(self.calls_per_thread):
            hours_back = thread * self.calls_per_thread + call
            end = self.newest_end - timedelta(days=2, hours=hours_back)
            page = self.queues[key].submit_threadsafe(
                self.clients[key].device_history,
                MAC,
                end,
                timeout=BRIDGE_TIMEOUT,
                priority=Priority.BACKFILL,
            )
            expected = self.server.timeline(MAC).page(
                int(end.timestamp() * 1000), HISTORY_PAGE_LIMIT
            )
            if page != expected:
                self.wrong_answers.append(f"history page ending {end.isoformat()}")

    async def _poll(self, key: int) -> None:
        """Poll one key, taking turns with the other, until the backfill is done."""
        loop = asyncio.get_running_loop()
        await self._pause_unless_done(key * POLL_INTERVAL)
        while not self._backfill_done.is_set():
            backfill_queued = self.queues[key].depth()["backfill"] > 0
            asked = loop.time()
            devices = await self.queues[key].submit(
                self.clients[key].devices, priority=Priority.POLL
            )
            if backfill_queued:
                self.poll_waits.append(loop.time() - asked)
            if not is_station_list(devices):
                self.wrong_answers.append(f"poll of key {key}: {devices!r}")
            # Poll at a random phase of the queue's slots, not locked to one.
            turn = len(self.queues) * POLL_INTERVAL
            await self._pause_unless_done(turn + random.uniform(-0.5, 0.5))

    async def _validate(self) -> None:
        """Validate the first key as a config flow would, once work is queued."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(POLL_INTERVAL + 0.5)
        asked = loop.time()
        devices = await self.queues[0].submit(
            self.clients[0].devices, priority=Priority.CONFIG_FLOW
        )
        self.config_flow_wait = loop.time() - asked
        if not is_station_list(devices):
            self.wrong_answers.append(f"config flow: {devices!r}")

    async def _pause_unless_done(self, seconds: float) -> None:
        """Sleep, but wake as soon as the backfill is done."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._backfill_done.wait(), seconds)


def is_station_list(devices: list[Record]) -> bool:
    """Return True if /devices listed station A with its latest record."""
    return [d["macAddress"] for d in devices] == [MAC] and bool(devices[0]["lastData"])


async def run_stress(
    server: LocalAmbientServer, origin: str, calls_per_thread: int
) -> StressRun:
    """Play the scenario against a running server and return what happened."""
    async with aiohttp.ClientSession() as session:
        clients = [
            AmbientClient(session, api_key, APPLICATION_KEY, origin)
            for api_key in API_KEYS
        ]
        run = StressRun(server, clients, calls_per_thread)
        await run.play()
    return run


@dataclass
class Loopback:
    """The local server and where it listens."""

    server: LocalAmbientServer
    origin: str


@pytest.fixture
async def api() -> AsyncIterator[Loopback]:
    """Serve station A on loopback to both keys, enforcing Ambient's limits."""
    server = LocalAmbientServer([(api_key, APPLICATION_KEY) for api_key in API_KEYS])
    yield Loopback(server, await server.start())
    await server.stop()


async def test_stress_stays_within_both_limits(api: Loopback) -> None:
    """Threads, polls and a config flow together: no 429, every answer right."""
    server = api.server

    run = await run_stress(server, api.origin, CALLS_PER_THREAD)

    assert run.wrong_answers == []
    assert server.count(429) == 0
    assert all(gap >= 1.0 for gap in server.min_gap_per_api_key().values())
    history = server.count(200, path_prefix=f"/v1/devices/{MAC}")
    assert history == THREADS * CALLS_PER_THREAD
    assert run.config_flow_wait is not None
    assert run.config_flow_wait < 2.0


async def test_stress_absorbs_an_injected_429(api: Loopback) -> None:
    """Two 429s on history pages are retried; every caller still gets its page."""
    server = api.server
    server.inject(429, count=2, path_prefix="/v1/devices/")

    run = await run_stress(server, api.origin, calls_per_thread=1)

    assert run.wrong_answers == []
    assert server.count(429) == 2
    assert sum(queue.metrics.rate_limited for queue in run.queues) == 2
    assert sum(queue.metrics.retried for queue in run.queues) == 2
    assert all(gap >= 1.0 for gap in server.min_gap_per_api_key().values())
    assert server.count(200, path_prefix=f"/v1/devices/{MAC}") == THREADS
