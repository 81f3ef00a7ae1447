"""Home Assistant stopping releases the threads that wait on the request queue."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
import threading
import time
from typing import Any

from aioresponses import aioresponses

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.ambient_weather.request_queue import QueueStoppedError

from .conftest import HISTORY_URL, MAC

# Real seconds: the promise under test, and a bound on the wait for setup.
RELEASE_WITHIN = 1.0
SETTLE_TIMEOUT = 5.0


async def settle(condition: Callable[[], bool]) -> None:
    """Yield to the loop until `condition()` holds, failing after SETTLE_TIMEOUT."""
    async with asyncio.timeout(SETTLE_TIMEOUT):
        # The queue announces nothing when a request joins it; its depth tells.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_stopping_releases_threads_waiting_in_submit_threadsafe(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_api: aioresponses,
) -> None:
    """A thread whose page is in flight and one queued behind it end within 1 s."""
    runtime = init_integration.runtime_data
    in_flight = asyncio.Event()
    never = asyncio.Event()

    async def never_answer(url: Any, **kwargs: Any) -> None:
        """Hold the history request until the queue gives up on it."""
        in_flight.set()
        await never.wait()

    mock_api.get(HISTORY_URL, callback=never_answer, repeat=True)
    outcomes: list[BaseException | None] = []
    finished: list[float] = []

    def fetch_page(end: datetime) -> None:
        """Ask for one page through the bridge, as a backfill job does."""
        try:
            runtime.queue.submit_threadsafe(
                runtime.client.device_history, MAC, end, timeout=30
            )
        except Exception as err:  # noqa: BLE001
            outcomes.append(err)
        else:
            outcomes.append(None)
        finished.append(time.monotonic())

    now = datetime.now(UTC)
    threads = [
        threading.Thread(target=fetch_page, args=(now - timedelta(days=days),))
        for days in (1, 2)
    ]
    threads[0].start()
    async with asyncio.timeout(SETTLE_TIMEOUT):
        await in_flight.wait()
    threads[1].start()
    await settle(lambda: runtime.queue.depth()["backfill"] == 1)

    stopping = time.monotonic()
    await hass.async_stop()
    for thread in threads:
        thread.join(max(0.0, stopping + RELEASE_WITHIN - time.monotonic()))

    assert not any(thread.is_alive() for thread in threads)
    assert [type(outcome) for outcome in outcomes] == [QueueStoppedError] * 2
    assert max(finished) - stopping < RELEASE_WITHIN
