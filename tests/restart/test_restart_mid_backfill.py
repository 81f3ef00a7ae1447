"""Tests for a backfill job cut off by a restart of Home Assistant.

The first instance starts a three-day job and stops while its third page is in
flight; the second, booted on the same storage and database with the same
config entry, must finish the job by itself, from the checkpoint, and leave the
statistics an uninterrupted job leaves.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from aioresponses import CallbackResult, aioresponses
import pytest
from yarl import URL

from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
)
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
)

from custom_components.ambient_weather.const import (
    CONF_APPLICATION_KEY,
    DOMAIN,
    EVENT_BACKFILL_FINISHED,
)
from custom_components.ambient_weather.queues import key_label
from tests.home_assistant.conftest import (
    API_KEY,
    APPLICATION_KEY,
    DEVICES_URL,
    HISTORY_URL,
    MAC,
    load_fixture,
)
from tests.home_assistant.test_backfill import _celsius, _entity_id, _statistics
from tests.home_assistant.test_backfill_jobs import (
    HOUR,
    History,
    _hour_start,
    _hourly_rain,
    _records,
)

from .conftest import HomeAssistantBooter

ENTRY_ID = "01JRESTARTMIDBACKFILL00000"
MM_PER_INCH = 25.4
RECORDS_PER_DAY = 288


class LoggedHistory(History):
    """History that also notes where each page it is asked for ends."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        """Serve these records."""
        super().__init__(records)
        self.page_ends: list[datetime] = []

    async def serve(self, url: URL, **kwargs: Any) -> CallbackResult:
        """Note the page's endDate, then serve the page."""
        end_ms = int(kwargs["params"]["endDate"])
        self.page_ends.append(dt_util.utc_from_timestamp(end_ms / 1000))
        return await super().serve(url, **kwargs)


@dataclass(kw_only=True)
class Restart:
    """What a job cut off by a restart left behind."""

    start: datetime
    records: list[dict[str, Any]]
    first: LoggedHistory
    second: LoggedHistory
    checkpoint: dict[str, Any]
    jobs_left: dict[str, Any]
    device_id: str
    second_events: list[dict[str, Any]]
    temperature: list[dict[str, Any]]
    rain: list[dict[str, Any]]


@contextmanager
def _ambient_api(history: History) -> Iterator[None]:
    """Answer /devices with the station fixture, and its history from `history`."""
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=load_fixture("devices.json"), repeat=True)
        mocked.get(HISTORY_URL, callback=history.serve, repeat=True)
        yield


async def _async_start(hass: HomeAssistant) -> None:
    """Set up the account's entry, the same in every instance, then start."""
    MockConfigEntry(
        domain=DOMAIN,
        title="My Weather Station",
        data={CONF_API_KEY: API_KEY, CONF_APPLICATION_KEY: APPLICATION_KEY},
        unique_id=key_label(API_KEY),
        entry_id=ENTRY_ID,
    ).add_to_hass(hass)
    assert await hass.config_entries.async_setup(ENTRY_ID)
    await hass.async_start()
    await hass.async_block_till_done()


@pytest.fixture
async def restart(
    boot_home_assistant: HomeAssistantBooter, hass_storage: dict[str, Any]
) -> Restart:
    """Cut a three-day job off by a restart and let the next start finish it."""
    end = _hour_start(dt_util.utcnow())
    start = end - timedelta(days=3)
    records = _records(start - HOUR, end)
    key = f"{DOMAIN}.backfill.{ENTRY_ID}"

    # Two pages (two days) are imported; Home Assistant stops during the third.
    first = LoggedHistory(records)
    first.hold_at = 3
    async with boot_home_assistant() as hass:
        with _ambient_api(first):
            await _async_start(hass)
            data = {"start": start.isoformat(), "end": end.isoformat()}
            await hass.services.async_call(DOMAIN, "backfill", data, blocking=True)
            await first.held.wait()
            await hass.async_stop()
        device = dr.async_get(hass).async_get_device_by_identifier(
            (DOMAIN, MAC), ENTRY_ID
        )
        assert device is not None
    [checkpoint] = hass_storage[key]["data"]["jobs"].values()

    second = LoggedHistory(records)
    async with boot_home_assistant() as hass:
        second_events = async_capture_events(hass, EVENT_BACKFILL_FINISHED)
        with _ambient_api(second):
            await _async_start(hass)
            await hass.async_block_till_done(wait_background_tasks=True)
            await async_wait_recording_done(hass)
        temperature = _entity_id(hass, "tempf")
        rain = _entity_id(hass, "dailyrainin")
        rows = await _statistics(hass, start - HOUR, {temperature, rain})
        await hass.async_stop()

    return Restart(
        start=start,
        records=records,
        first=first,
        second=second,
        checkpoint=checkpoint,
        jobs_left=hass_storage[key]["data"]["jobs"],
        device_id=device.id,
        second_events=[event.data for event in second_events],
        temperature=rows[temperature],
        rain=rows[rain],
    )


async def test_next_start_resumes_the_job_at_its_checkpoint(restart: Restart) -> None:
    """The second instance asks only for the pages the first did not import."""
    checkpoint = restart.checkpoint
    resume_end = dt_util.parse_datetime(checkpoint["resume_end"])
    assert checkpoint["pages_done"] == 2
    assert restart.start < resume_end < restart.first.page_ends[0]
    assert len(restart.first.page_ends) == 3

    # The page lost in flight is asked for again, then the one before the
    # range: five requests where an uninterrupted job makes four.
    assert restart.second.page_ends[0] == resume_end
    assert len(restart.second.page_ends) == 2
    assert [event["status"] for event in restart.second_events] == ["completed"]
    assert not restart.jobs_left


async def test_resumed_job_writes_what_an_uninterrupted_one_does(
    restart: Restart,
) -> None:
    """Every hour of the range has one row, and sums run on across the resume."""
    hours = [restart.start + i * HOUR for i in range(72)]
    for rows in (restart.temperature, restart.rain):
        assert [dt_util.utc_from_timestamp(row["start"]) for row in rows] == hours
    assert [row["mean"] for row in restart.temperature] == pytest.approx(
        [_celsius(40 + hour.hour) for hour in hours]
    )

    # Sums start from zero (nothing came before) and each hour, on both sides
    # of the resume, grows by its rain: no step where the second instance took
    # over.
    sums = [row["sum"] for row in restart.rain]
    rain_by_hour = _hourly_rain(restart.records)
    assert sums[0] == pytest.approx(rain_by_hour[hours[0]] * MM_PER_INCH)
    assert [b - a for a, b in pairwise(sums)] == pytest.approx(
        [rain_by_hour[hour] * MM_PER_INCH for hour in hours[1:]]
    )


async def test_resumed_job_announces_what_an_uninterrupted_one_does(
    restart: Restart,
) -> None:
    """The finished event names the station and counts each record once."""
    [event] = restart.second_events
    assert event["status"] == "completed", event.get("error")
    assert event["device_id"] == restart.device_id
    assert event["hours"] == 72
    assert event["records"] == 3 * RECORDS_PER_DAY
