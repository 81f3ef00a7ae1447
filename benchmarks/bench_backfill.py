"""Benchmark one station-year of backfill in Home Assistant, against the local API.

    scripts/bench_backfill [--days N] [--poll-every S] [--profile] [--tracemalloc]

The script passes its options in AMBIENT_BENCH_* variables and runs this module
under pytest by name; `scripts/test` (testpaths = tests) never collects it.

Home Assistant runs in pytest-homeassistant-custom-component's harness with its
real recorder, made to run as in production: a SQLite file, the default commit
interval, the 5-minute statistics compile on and the event loop out of debug
mode. The local Ambient API runs in a child process (see `api_process.py`),
repeating station A's 85 recorded days back over a year and answering 429 to
anything faster than one request per second per API key. The integration is set
up, so the coordinator polls every 60 s (`--poll-every` adds refreshes), then the
`ambient_weather.backfill` action asks for `--days` days (365 by default) and the
benchmark waits for `ambient_weather_backfill_finished`.

It prints one table of figures against the issue's goals and how each was
measured. It fails only when the job does not complete; a missed goal is a
finding, not an error.
"""

import asyncio
from collections.abc import Iterator
import logging
import os
import sys
import time
from typing import Any, cast

import pytest

from homeassistant.components.recorder import DEFAULT_COMMIT_INTERVAL, Recorder
from homeassistant.const import CONF_API_KEY
from homeassistant.core import Event, HomeAssistant, callback
from pytest_homeassistant_custom_component import patch_recorder
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.ambient_weather.const import (
    API_ORIGIN_ENV,
    CONF_APPLICATION_KEY,
    DOMAIN,
    EVENT_BACKFILL_FINISHED,
    SERVICE_BACKFILL,
)
from custom_components.ambient_weather.coordinator import AmbientDataUpdateCoordinator
from custom_components.ambient_weather.queues import key_label
from custom_components.ambient_weather.request_queue import MIN_SPACING

from .api_process import ApiServerProcess, Served
from .backfill_report import Run, report
from .instruments import Instruments

DAYS = int(os.environ.get("AMBIENT_BENCH_DAYS", "365"))
POLL_EVERY = float(os.environ.get("AMBIENT_BENCH_POLL_EVERY", "0"))
TRACEMALLOC = os.environ.get("AMBIENT_BENCH_TRACEMALLOC") == "1"
PROFILE = os.environ.get("AMBIENT_BENCH_PROFILE") == "1"
# The server reaches a year back, and further when more days are asked for.
LOOP_DAYS = max(365, DAYS + 2)
# Generous bounds: twice the job's time at the queue's spacing, plus slack.
JOB_TIMEOUT = 2 * (DAYS + 2) * MIN_SPACING + 120
TEST_TIMEOUT = JOB_TIMEOUT + 300

API_KEY = "bench-api-key-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
APPLICATION_KEY = "bench-app-key-a1b2c3d4e5f60718293a4b5c6d7e8f90"

pytestmark = [
    pytest.mark.usefixtures("socket_enabled"),
    pytest.mark.timeout(TEST_TIMEOUT),
]


@pytest.fixture(autouse=True)
def real_recorder(recorder_mock: Recorder, enable_custom_integrations: None) -> None:
    """Start the recorder before Home Assistant, and let our integration load."""


@pytest.fixture(autouse=True)
def unrecorded_sessions(real_recorder: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the harness from holding on to every recorder session.

    The harness wraps the recorder's `session_scope` in a mock, which keeps the
    arguments of every call, the session included: memory that grows with each
    import and that Home Assistant itself never holds. Call the wrapped function
    directly instead.
    """
    wrapped = patch_recorder.real_session_scope
    if callable(side_effect := getattr(wrapped, "side_effect", None)):
        monkeypatch.setattr(patch_recorder, "real_session_scope", side_effect)


@pytest.fixture(autouse=True)
def production_logging() -> Iterator[None]:
    """Log at WARNING, as Home Assistant does unless started with --verbose.

    The harness logs at INFO and echoes every SQL statement, which would bill
    the recorder and the GIL for formatting log lines nobody reads.
    """
    loggers = [logging.getLogger(), logging.getLogger("sqlalchemy.engine")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.fixture(autouse=True)
async def enable_event_loop_debug() -> None:
    """Leave the loop out of debug mode, as Home Assistant runs it."""


@pytest.fixture
def persistent_database() -> bool:
    """Keep the recorder's database in a SQLite file, as Home Assistant does."""
    return True


@pytest.fixture
def recorder_config() -> dict[str, Any]:
    """Commit at the recorder's default interval instead of every event."""
    return {"commit_interval": DEFAULT_COMMIT_INTERVAL}


@pytest.fixture
def enable_statistics() -> bool:
    """Let the recorder compile statistics every 5 minutes beside the backfill."""
    return True


@pytest.fixture
def api_server() -> Iterator[ApiServerProcess]:
    """Run the local Ambient API in a child process for the benchmark."""
    server = ApiServerProcess(API_KEY, APPLICATION_KEY, LOOP_DAYS)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def entry(
    hass: HomeAssistant,
    api_server: ApiServerProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> MockConfigEntry:
    """Set up the integration against the local API."""
    monkeypatch.setenv(API_ORIGIN_ENV, api_server.origin)
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Bench station",
        data={CONF_API_KEY: API_KEY, CONF_APPLICATION_KEY: APPLICATION_KEY},
        unique_id=key_label(API_KEY),
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def _poll(coordinator: AmbientDataUpdateCoordinator) -> None:
    """Refresh the coordinator every POLL_EVERY seconds, on top of its own polls."""
    while True:
        await asyncio.sleep(POLL_EVERY)
        await coordinator.async_refresh()


async def test_backfill_station_year(
    recorder_mock: Recorder,
    hass: HomeAssistant,
    entry: MockConfigEntry,
    api_server: ApiServerProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Backfill DAYS days with polling on and print the figures."""
    instruments = Instruments(
        hass, recorder_mock, monkeypatch, profile=PROFILE, trace_memory=TRACEMALLOC
    )
    finished: asyncio.Future[tuple[float, dict[str, Any]]] = hass.loop.create_future()

    @callback
    def _async_finished(event: Event) -> None:
        """Note when and how the job ended."""
        if not finished.done():
            finished.set_result((time.monotonic(), dict(event.data)))

    unsubscribe = hass.bus.async_listen(EVENT_BACKFILL_FINISHED, _async_finished)
    instruments.start()
    if POLL_EVERY:
        coordinator = entry.runtime_data.coordinator
        instruments.add_task(
            hass.async_create_background_task(_poll(coordinator), "bench poll")
        )
    try:
        response = await hass.services.async_call(
            DOMAIN,
            SERVICE_BACKFILL,
            {"days": DAYS},
            blocking=True,
            return_response=True,
        )
        async with asyncio.timeout(JOB_TIMEOUT):
            ended, event = await finished
    finally:
        await instruments.stop()
        unsubscribe()

    assert response is not None
    plans = cast("list[dict[str, Any]]", response["stations"])
    log = await asyncio.to_thread(api_server.log)
    sys.stdout.write(report(_run(instruments, event, plans[0], ended, log)))
    sys.stdout.flush()
    assert event["status"] == "completed", event


def _run(
    instruments: Instruments,
    event: dict[str, Any],
    plan: dict[str, Any],
    ended: float,
    log: list[Served],
) -> Run:
    """Gather what the instruments measured into the report's record."""
    assert instruments.before is not None
    assert instruments.after is not None
    started = instruments.before.wall
    return Run(
        days=DAYS,
        loop_days=LOOP_DAYS,
        poll_every=POLL_EVERY,
        profiled=PROFILE,
        load=instruments.load,
        cores=os.cpu_count() or 0,
        schedstat=instruments.schedstat,
        event=event,
        plan=plan,
        spent=instruments.after - instruments.before,
        started=started,
        ended=ended,
        log=log,
        sampler=instruments.sampler,
        worker_cpu=instruments.meter.worker,
        loop_parts=instruments.meter.loop,
        stalls=instruments.probe.report,
        gc_pauses=[
            d for at, d in instruments.gc_watch.pauses if started <= at <= ended
        ],
        dumps=instruments.dumps,
        traced_peak=instruments.traced_peak,
        traced_sites=instruments.traced_sites,
    )
