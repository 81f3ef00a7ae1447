"""Tests for backfill jobs beside the recorder: limits, sums, resume, refusal."""

import asyncio
from datetime import datetime, timedelta
from itertools import pairwise
import threading
import time
from typing import Any

from aioresponses import CallbackResult, aioresponses
from freezegun.api import FrozenDateTimeFactory
import pytest
from yarl import URL

from homeassistant.components.recorder import get_instance
from homeassistant.const import EVENT_HOMEASSISTANT_STARTED
from homeassistant.core import CoreState, HomeAssistant, callback
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.event import async_track_utc_time_change
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
    do_adhoc_statistics,
)

from custom_components.ambient_weather.backfill_worker import (
    BackfillWorker,
    _join_adjustment,
)
from custom_components.ambient_weather.const import (
    CONF_GAP_FILL,
    DOMAIN,
    EVENT_BACKFILL_FINISHED,
)

from .conftest import DEVICES_URL, HISTORY_URL, load_fixture
from .test_backfill import _celsius, _entity_id, _statistics

HOUR = timedelta(hours=1)
RAIN_PER_RECORD = 0.01


def _hour_start(moment: datetime) -> datetime:
    """Return the start of the hour holding a moment."""
    return moment.replace(minute=0, second=0, microsecond=0)


def _records(first: datetime, last: datetime) -> list[dict[str, Any]]:
    """Return 5-minute records in [first, last): a known value per hour.

    The temperature is 40 °F plus the hour of the day, so each hour's mean is
    exact; daily rain grows 0.01 in per record and resets at midnight UTC.
    """
    records = []
    moment = first
    while moment < last:
        since_midnight = moment - moment.replace(hour=0, minute=0)
        records.append(
            {
                "dateutc": int(moment.timestamp() * 1000),
                "tempf": 40 + moment.hour,
                "dailyrainin": round(
                    RAIN_PER_RECORD * (since_midnight // timedelta(minutes=5)), 2
                ),
            }
        )
        moment += timedelta(minutes=5)
    return records


class History:
    """Answer history requests from records; can hold one request back."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        """Serve these records."""
        self.records = sorted(records, key=lambda r: r["dateutc"], reverse=True)
        self.requests = 0
        self.hold_at: int | None = None
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def serve(self, url: URL, **kwargs: Any) -> CallbackResult:
        """Return one page, newest first, up to endDate."""
        self.requests += 1
        if self.requests == self.hold_at:
            self.held.set()
            await self.release.wait()
        end = int(kwargs["params"]["endDate"])
        limit = int(kwargs["params"]["limit"])
        page = [r for r in self.records if r["dateutc"] <= end][:limit]
        return CallbackResult(payload=page)

    async def serve_one_day(self, url: URL, **kwargs: Any) -> CallbackResult:
        """Return the page, but only records of the day before endDate."""
        result = await self.serve(url, **kwargs)
        end = int(kwargs["params"]["endDate"])
        day_ms = 86_400_000
        page = [r for r in result.payload if r["dateutc"] > end - day_ms]
        return CallbackResult(payload=page)


def _rain_between(older: float, newer: float) -> float:
    """Return the rain from one daily-rain value to the next (resets count from 0)."""
    return newer if newer < 0.9 * older else max(newer - older, 0.0)


def _hourly_rain(records: list[dict[str, Any]]) -> dict[datetime, float]:
    """Return each hour's rain, from consecutive records."""
    rain: dict[datetime, float] = {}
    ordered = sorted(records, key=lambda r: r["dateutc"])
    for older, newer in pairwise(ordered):
        hour = _hour_start(dt_util.utc_from_timestamp(newer["dateutc"] / 1000))
        change = _rain_between(older["dailyrainin"], newer["dailyrainin"])
        rain[hour] = rain.get(hour, 0.0) + change
    return rain


async def _backfill(
    hass: HomeAssistant,
    data: dict[str, Any],
    freezer: FrozenDateTimeFactory | None = None,
) -> dict[str, Any]:
    """Run a backfill to its end and return its finished event.

    With the clock frozen, the queue's spacing and the recorder's commits wait
    for time to pass, so the clock is moved on until the job ends.
    """
    events = async_capture_events(hass, EVENT_BACKFILL_FINISHED)
    await hass.services.async_call(DOMAIN, "backfill", data, blocking=True)
    loop = asyncio.get_running_loop()
    while freezer is not None and not events:
        freezer.tick(0.5)
        async_fire_time_changed(hass)
        # A frozen clock stalls asyncio.sleep; wait in real time instead.
        await loop.run_in_executor(None, time.sleep, 0.01)
    await hass.async_block_till_done(wait_background_tasks=True)
    await async_wait_recording_done(hass)
    assert len(events) == 1
    return events[0].data


async def _compile_hour(hass: HomeAssistant, hour: datetime) -> None:
    """Let the recorder compile one hour from the states, as it does every hour."""
    for minutes in range(0, 60, 5):
        do_adhoc_statistics(hass, start=hour + timedelta(minutes=minutes))
    await async_wait_recording_done(hass)


async def test_backfill_respects_the_recorders_hours(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    mock_api: aioresponses,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Hours before the entity are filled, compiled ones corrected, pending ones left."""
    now = _hour_start(dt_util.utcnow()) + timedelta(minutes=20)
    created = now - timedelta(hours=5, minutes=50)
    freezer.move_to(created)
    # Moving the clock by hours looks like downtime: no automatic gap fill here.
    mock_config_entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(
        mock_config_entry, options={CONF_GAP_FILL: False}
    )
    await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()

    # The recorder compiles the entity's first two hours from its live state
    # (66.9 °F, no rain); the third hour has ended but is not compiled yet.
    first_hour = _hour_start(created)
    freezer.move_to(first_hour + 2 * HOUR + timedelta(minutes=1))
    for hour in (first_hour, first_hour + HOUR):
        await _compile_hour(hass, hour)
    temperature = _entity_id(hass, "tempf")
    rain = _entity_id(hass, "dailyrainin")
    compiled = await _statistics(hass, first_hour, {temperature, rain})
    assert [row["mean"] for row in compiled[temperature]] == pytest.approx(
        [_celsius(66.9)] * 2
    )
    assert [row["sum"] for row in compiled[rain]] == pytest.approx([0.0, 0.0])

    freezer.move_to(now)
    records = _records(first_hour - 4 * HOUR, now)
    mock_api.get(HISTORY_URL, callback=History(records).serve, repeat=True)
    event = await _backfill(hass, {"days": 1}, freezer)
    assert event["status"] == "completed", event.get("error")

    rows = await _statistics(hass, first_hour - 5 * HOUR, {temperature, rain})
    starts = [dt_util.utc_from_timestamp(row["start"]) for row in rows[temperature]]
    # Four hours before the entity existed, then its two compiled hours: the
    # hour whose compile is pending and the current hour are left alone.
    assert starts == [first_hour + i * HOUR for i in range(-4, 2)]
    assert [row["mean"] for row in rows[temperature]] == pytest.approx(
        [_celsius(40 + start.hour) for start in starts]
    )

    # Sums start from zero, as nothing came before, and each hour changes by
    # its rain, the compiled hours included.
    sums = [row["sum"] for row in rows[rain]]
    rain_by_hour = _hourly_rain(records)
    assert sums[0] == pytest.approx(rain_by_hour[starts[0]] * 25.4)
    changes = [b - a for a, b in pairwise(sums)]
    assert changes == pytest.approx(
        [rain_by_hour[start] * 25.4 for start in starts[1:]]
    )
    assert min(changes) >= 0

    # The recorder's next compile continues from its own sum without a step.
    await _compile_hour(hass, first_hour + 2 * HOUR)
    after = await _statistics(hass, first_hour + 2 * HOUR, {rain})
    assert after[rain][0]["sum"] - sums[-1] == pytest.approx(0.0)


# Created well into an hour, or as it begins: a job that ends then ends before
# the recorder has even queued the compile of the hour before. The sensor shows
# either a reset (the console's new day) or 0.05 in more than the last record.
@pytest.mark.parametrize("enable_statistics", [True])
@pytest.mark.parametrize(
    ("into_hour", "more_rain"),
    [
        (timedelta(minutes=20), None),
        (timedelta(0), None),
        (timedelta(minutes=20), 0.05),
    ],
)
async def test_new_sensors_first_compile_continues_the_backfilled_sums(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
    into_hour: timedelta,
    more_rain: float | None,
) -> None:
    """A backfill done before the recorder's first compile of a sensor joins it.

    The recorder starts a sensor's sums from its newest 5-minute row; with none
    it would start again from zero, an hour of negative rain after the history.
    """
    created = _hour_start(dt_util.utcnow()) + into_hour
    freezer.move_to(created)
    records = _records(created - 6 * HOUR, created)
    devices = load_fixture("devices.json")
    shown = 0.0 if more_rain is None else records[-1]["dailyrainin"] + more_rain
    devices[0]["lastData"]["dailyrainin"] = shown

    @callback
    def _compile(now: datetime) -> None:
        get_instance(hass).async_periodic_statistics()

    # The recorder's 5-minute compiles (`enable_statistics`), each queued 10 s
    # after its period as the recorder does, but on the test's clock.
    unsubscribe = async_track_utc_time_change(
        hass, _compile, minute=range(0, 60, 5), second=10
    )
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=devices, repeat=True)
        mocked.get(HISTORY_URL, callback=History(records).serve, repeat=True)
        mock_config_entry.add_to_hass(hass)
        hass.config_entries.async_update_entry(
            mock_config_entry, options={CONF_GAP_FILL: False}
        )
        await hass.config_entries.async_setup(mock_config_entry.entry_id)
        await hass.async_block_till_done()
        event = await _backfill(hass, {"days": 1}, freezer)
        assert event["status"] == "completed", event.get("error")
        # Past the recorder's compile of the hour before the sensor, if the job
        # ended before it: that compile must find no row of ours to insert again.
        freezer.tick(timedelta(seconds=30))
        async_fire_time_changed(hass)
        await async_wait_recording_done(hass)
    unsubscribe()
    assert "duplicated" not in caplog.text

    first_hour = _hour_start(created)
    freezer.move_to(first_hour + HOUR + timedelta(minutes=1))
    await _compile_hour(hass, first_hour)

    rain = _entity_id(hass, "dailyrainin")
    rows = (await _statistics(hass, first_hour - 2 * HOUR, {rain}))[rain]
    starts = [dt_util.utc_from_timestamp(row["start"]) for row in rows]
    assert starts == [first_hour - 2 * HOUR, first_hour - HOUR, first_hour]
    imported, last_imported, compiled = (row["sum"] for row in rows)
    assert last_imported - imported == pytest.approx(
        _hourly_rain(records)[first_hour - HOUR] * 25.4
    )
    # The recorder's first hour adds the rain from the last record the backfill
    # took (the sensor's first hour is the recorder's) to what the sensor shows;
    # after a reset to 0 in, none.
    last_taken = max(
        (r for r in records if r["dateutc"] < first_hour.timestamp() * 1000),
        key=lambda r: r["dateutc"],
    )
    expected = _rain_between(last_taken["dailyrainin"], shown)
    assert compiled - last_imported == pytest.approx(expected * 25.4)


async def test_backfill_twice_changes_nothing(
    hass: HomeAssistant, init_integration: MockConfigEntry, mock_api: aioresponses
) -> None:
    """Running the same backfill again writes the same statistics."""
    end = _hour_start(dt_util.utcnow())
    start = end - timedelta(days=2)
    records = _records(start - HOUR, end)
    mock_api.get(HISTORY_URL, callback=History(records).serve, repeat=True)
    data = {"start": start.isoformat(), "end": end.isoformat()}
    ids = {_entity_id(hass, "tempf"), _entity_id(hass, "dailyrainin")}

    first = await _backfill(hass, data)
    once = await _statistics(hass, start - HOUR, ids)
    progress = hass.states.get(_entity_id(hass, "backfill_progress"))
    assert progress is not None
    assert progress.state == "100.0"
    assert progress.attributes["status"] == "completed"
    assert progress.attributes["hours_imported"] == 48
    second = await _backfill(hass, data)
    twice = await _statistics(hass, start - HOUR, ids)

    assert first["hours"] == second["hours"] == 48
    # The same rows, up to the last bits of floating point.
    assert twice.keys() == once.keys()
    for statistic_id, rows in once.items():
        assert [row["start"] for row in twice[statistic_id]] == [
            row["start"] for row in rows
        ]
        for key in ("mean", "min", "max", "state", "sum"):
            assert [row[key] for row in twice[statistic_id]] == pytest.approx(
                [row[key] for row in rows], abs=1e-9
            )


async def test_completed_job_shows_the_pages_it_took(
    hass: HomeAssistant, init_integration: MockConfigEntry, mock_api: aioresponses
) -> None:
    """A station recording every 10 minutes fills a day in one page, not two."""
    end = _hour_start(dt_util.utcnow())
    history = History(_records(end - timedelta(days=2), end)[::2])
    mock_api.get(HISTORY_URL, callback=history.serve, repeat=True)

    event = await _backfill(hass, {"days": 1})

    assert event["status"] == "completed"
    assert history.requests == 1
    progress = hass.states.get(_entity_id(hass, "backfill_progress"))
    assert progress is not None
    assert progress.state == "100.0"
    assert progress.attributes["pages_done"] == 1
    assert progress.attributes["pages_total"] == 1


async def test_second_backfill_of_a_station_is_refused(
    hass: HomeAssistant, init_integration: MockConfigEntry, mock_api: aioresponses
) -> None:
    """A station that is backfilling refuses another backfill, naming it."""
    history = History(_records(dt_util.utcnow() - timedelta(days=3), dt_util.utcnow()))
    history.hold_at = 2
    mock_api.get(HISTORY_URL, callback=history.serve, repeat=True)
    events = async_capture_events(hass, EVENT_BACKFILL_FINISHED)
    await hass.services.async_call(DOMAIN, "backfill", {"days": 2}, blocking=True)
    await history.held.wait()
    await hass.async_block_till_done()

    # One page of three (two days and the record before them) is done.
    progress = hass.states.get(_entity_id(hass, "backfill_progress"))
    assert progress is not None
    assert float(progress.state) == pytest.approx(100 / 3)
    assert progress.attributes["pages_done"] == 1
    assert progress.attributes["pages_total"] == 3
    # 24 hours of records; the oldest hour waits for the record before it.
    assert progress.attributes["hours_imported"] == 23

    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(DOMAIN, "backfill", {"days": 1}, blocking=True)
    assert err.value.translation_key == "backfill_running"
    assert err.value.translation_placeholders == {"station": "My Weather Station"}

    # Cancelling returns once the job has ended, though its page is still held.
    await hass.services.async_call(DOMAIN, "cancel_backfill", {}, blocking=True)
    assert [event.data["status"] for event in events] == ["cancelled"]
    assert not history.release.is_set()
    # The sensor keeps showing how far the job got, and that it was cancelled.
    progress = hass.states.get(_entity_id(hass, "backfill_progress"))
    assert progress is not None
    assert float(progress.state) == pytest.approx(100 / 3)
    assert progress.attributes["status"] == "cancelled"
    assert "estimated_end" not in progress.attributes

    # So a new backfill of the station can start at once.
    await hass.services.async_call(DOMAIN, "backfill", {"days": 1}, blocking=True)
    history.release.set()
    await hass.async_block_till_done(wait_background_tasks=True)
    assert [event.data["status"] for event in events] == ["cancelled", "completed"]


async def test_backfill_answers_with_its_plan(
    hass: HomeAssistant, init_integration: MockConfigEntry, mock_api: aioresponses
) -> None:
    """Asked for a response, the action returns the range and pages per station."""
    mock_api.get(HISTORY_URL, callback=History([]).serve, repeat=True)
    end = _hour_start(dt_util.utcnow())
    response = await hass.services.async_call(
        DOMAIN,
        "backfill",
        # An empty list of stations, as YAML may give, means all of them.
        {
            "start": (end - timedelta(days=10)).isoformat(),
            "end": end.isoformat(),
            "device_id": [],
        },
        blocking=True,
        return_response=True,
    )
    await hass.async_block_till_done(wait_background_tasks=True)
    [plan] = response["stations"]
    assert plan["station"] == "My Weather Station"
    assert plan["start"] == (end - timedelta(days=10)).isoformat()
    assert plan["end"] == end.isoformat()
    assert plan["pages"] == 11
    assert 10 <= plan["estimated_seconds"] <= 12


async def test_unloaded_job_resumes_where_it_stopped(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
) -> None:
    """A job stopped mid-way resumes after setup and ends as if never stopped."""
    end = _hour_start(dt_util.utcnow())
    start = end - timedelta(days=3)
    records = _records(start - HOUR, end)
    history = History(records)
    history.hold_at = 3
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=load_fixture("devices.json"), repeat=True)
        mocked.get(HISTORY_URL, callback=history.serve, repeat=True)
        mock_config_entry.add_to_hass(hass)
        await hass.config_entries.async_setup(mock_config_entry.entry_id)
        await hass.async_block_till_done()
        events = async_capture_events(hass, EVENT_BACKFILL_FINISHED)
        data = {"start": start.isoformat(), "end": end.isoformat()}
        await hass.services.async_call(DOMAIN, "backfill", data, blocking=True)
        await history.held.wait()

        # Two pages (two days) are imported; the third is in flight.
        await hass.config_entries.async_unload(mock_config_entry.entry_id)
        history.release.set()
        await hass.async_block_till_done(wait_background_tasks=True)
        assert [event.data["status"] for event in events] == ["cancelled"]
        key = f"{DOMAIN}.backfill.{mock_config_entry.entry_id}"
        [saved] = hass_storage[key]["data"]["jobs"].values()
        assert saved["pages_done"] == 2
        assert dt_util.parse_datetime(saved["resume_end"]) > start

        await hass.config_entries.async_setup(mock_config_entry.entry_id)
        await hass.async_block_till_done(wait_background_tasks=True)
        await async_wait_recording_done(hass)

    assert [event.data["status"] for event in events] == ["cancelled", "completed"]
    assert not hass_storage[key]["data"]["jobs"]
    temperature = _entity_id(hass, "tempf")
    rain = _entity_id(hass, "dailyrainin")
    rows = await _statistics(hass, start - HOUR, {temperature, rain})
    assert len(rows[temperature]) == 72
    assert [row["mean"] for row in rows[temperature]] == pytest.approx(
        [
            _celsius(40 + dt_util.utc_from_timestamp(row["start"]).hour)
            for row in rows[temperature]
        ]
    )
    rain_by_hour = _hourly_rain(records)
    sums = [row["sum"] for row in rows[rain]]
    starts = [dt_util.utc_from_timestamp(row["start"]) for row in rows[rain]]
    assert sums[0] == pytest.approx(rain_by_hour[starts[0]] * 25.4)
    changes = [b - a for a, b in pairwise(sums)]
    assert changes == pytest.approx(
        [rain_by_hour[start] * 25.4 for start in starts[1:]]
    )


async def test_job_started_before_home_assistant_has_started_runs_once(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    mock_api: aioresponses,
) -> None:
    """A backfill asked for while Home Assistant starts is not resumed beside itself."""
    end = _hour_start(dt_util.utcnow())
    start = end - timedelta(days=2)
    history = History(_records(start - HOUR, end))
    history.hold_at = 2
    mock_api.get(HISTORY_URL, callback=history.serve, repeat=True)
    hass.set_state(CoreState.starting)
    mock_config_entry.add_to_hass(hass)
    await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    events = async_capture_events(hass, EVENT_BACKFILL_FINISHED)
    data = {"start": start.isoformat(), "end": end.isoformat()}
    await hass.services.async_call(DOMAIN, "backfill", data, blocking=True)
    await history.held.wait()

    # Its first page is checkpointed when Home Assistant has started.
    hass.set_state(CoreState.running)
    hass.bus.async_fire(EVENT_HOMEASSISTANT_STARTED)
    await hass.async_block_till_done()
    history.release.set()
    await hass.async_block_till_done(wait_background_tasks=True)

    assert [event.data["status"] for event in events] == ["completed"]
    assert events[0].data["hours"] == 48
    # Two days and the record before them: three pages, each fetched once.
    assert history.requests == 3


@pytest.mark.parametrize("ending", ["cancelled", "failed"])
async def test_job_that_will_not_resume_joins_its_sums(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_api: aioresponses,
    ending: str,
) -> None:
    """A job cancelled by the user, or failed, leaves no negative change behind.

    Its counters' sums were laid back from the end of the range; joined, the
    oldest hour it imported shows that hour's rain, not a drop.
    """
    end = _hour_start(dt_util.utcnow())
    start = end - timedelta(days=3)
    records = _records(start - HOUR, end)
    history = History(records)
    history.hold_at = 3
    mock_api.get(HISTORY_URL, callback=history.serve, repeat=True)
    events = async_capture_events(hass, EVENT_BACKFILL_FINISHED)
    data = {"start": start.isoformat(), "end": end.isoformat()}
    await hass.services.async_call(DOMAIN, "backfill", data, blocking=True)
    await history.held.wait()

    # Two days are imported; the third page is in flight when the job ends,
    # and the day before it is never fetched.
    if ending == "cancelled":
        await hass.services.async_call(DOMAIN, "cancel_backfill", {}, blocking=True)
    else:
        history.records = [{"dateutc": "not a time"}]
    history.release.set()
    await hass.async_block_till_done(wait_background_tasks=True)
    await async_wait_recording_done(hass)

    [event] = events
    assert event.data["status"] == ending
    rain = _entity_id(hass, "dailyrainin")
    rows = (await _statistics(hass, start - HOUR, {rain}))[rain]
    # The page in flight may be imported; the record before the range is not.
    assert event.data["hours"] in (47, 71)
    assert len(rows) == event.data["hours"]
    rain_by_hour = _hourly_rain(records)
    starts = [dt_util.utc_from_timestamp(row["start"]) for row in rows]
    sums = [row["sum"] for row in rows]
    # Nothing was recorded before: the oldest hour's sum is its own rain.
    assert sums[0] == pytest.approx(rain_by_hour[starts[0]] * 25.4)
    assert [b - a for a, b in pairwise(sums)] == pytest.approx(
        [rain_by_hour[hour] * 25.4 for hour in starts[1:]]
    )


async def test_ranges_backfilled_one_after_another_join_without_a_dip(
    hass: HomeAssistant, init_integration: MockConfigEntry, mock_api: aioresponses
) -> None:
    """Days filled oldest first, then again across them, join without a step.

    Each day's oldest hour is dry: its change must be exactly zero, not a
    rounding error below.
    """
    end = _hour_start(dt_util.utcnow())
    first = end - timedelta(days=6)
    records = _records(first - HOUR, end)
    for record in records:
        # Rain falls only in the evening hours (UTC), and then in odd amounts.
        moment = dt_util.utc_from_timestamp(record["dateutc"] / 1000)
        steps = (moment.hour - 17) * 12 + moment.minute // 5
        record["dailyrainin"] = round(0.013 * steps, 3) if moment.hour > 17 else 0.0
    mock_api.get(HISTORY_URL, callback=History(records).serve, repeat=True)

    for day in reversed(range(6)):
        job_end = end - timedelta(days=day)
        data = {
            "start": (job_end - timedelta(days=1)).isoformat(),
            "end": job_end.isoformat(),
        }
        assert (await _backfill(hass, data))["status"] == "completed"
    # Filled again across the joins: only rounding may move the sums.
    for hours in (1, 13):
        data = {
            "start": (end - timedelta(days=5, hours=hours)).isoformat(),
            "end": (end - timedelta(days=1, hours=hours)).isoformat(),
        }
        assert (await _backfill(hass, data))["status"] == "completed"

    rain = _entity_id(hass, "dailyrainin")
    rows = (await _statistics(hass, first, {rain}))[rain]
    assert len(rows) == 6 * 24
    changes = [b["sum"] - a["sum"] for a, b in pairwise(rows)]
    assert min(changes) >= 0
    rain_by_hour = _hourly_rain(records)
    starts = [dt_util.utc_from_timestamp(row["start"]) for row in rows]
    assert changes == pytest.approx(
        [rain_by_hour.get(hour, 0.0) * 25.4 for hour in starts[1:]]
    )


@pytest.mark.parametrize(
    ("before", "running_sum"),
    [
        # Plain subtraction puts 0.2999999999999998 after 0.3: a negative change.
        (0.3, 0.3 - 3.9624),
        (1.1, 1.1 - 7.5946),
        (5.0, 12.5),
        # A hair below the row before: still moved.
        (2.0, 2.0 - 1e-12),
        # Large sums, a small move.
        (1234567.891, 1234567.891 - 1e-7),
    ],
)
def test_join_never_leaves_the_oldest_hour_below_the_row_before(
    before: float, running_sum: float
) -> None:
    """The join's adjustment, added in floating point, reaches the row before."""
    adjustment = _join_adjustment(before, running_sum)

    assert adjustment is not None
    assert running_sum + adjustment >= before
    assert adjustment == pytest.approx(before - running_sum, rel=1e-12, abs=1e-12)


def test_join_leaves_sums_already_in_place() -> None:
    """A job run again lands where it was, or a rounding error above: no move."""
    assert _join_adjustment(4.2, 4.2) is None
    assert _join_adjustment(4.2, 4.2 + 1e-12) is None


@pytest.mark.parametrize(("gap_fill", "jobs"), [(True, 1), (False, 0)])
async def test_gap_after_downtime_is_filled(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    mock_api: aioresponses,
    hass_storage: dict[str, Any],
    gap_fill: bool,
    jobs: int,
) -> None:
    """Three hours without a poll are backfilled at start, unless turned off."""
    now = dt_util.utcnow()
    last_poll = now - timedelta(hours=3)
    hass_storage[f"{DOMAIN}.backfill.{mock_config_entry.entry_id}"] = {
        "version": 1,
        "minor_version": 1,
        "key": f"{DOMAIN}.backfill.{mock_config_entry.entry_id}",
        "data": {"jobs": {}, "last_poll": last_poll.isoformat()},
    }
    mock_api.get(
        HISTORY_URL,
        callback=History(_records(last_poll - HOUR, now)).serve,
        repeat=True,
    )
    mock_config_entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(
        mock_config_entry, options={CONF_GAP_FILL: gap_fill}
    )
    events = async_capture_events(hass, EVENT_BACKFILL_FINISHED)

    await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done(wait_background_tasks=True)

    assert len(events) == jobs
    if jobs:
        event = events[0].data
        assert event["gap_fill"] is True
        assert event["status"] == "completed"
        assert event["start"] == _hour_start(last_poll).isoformat()
        assert event["hours"] == 3


async def test_stopping_home_assistant_stops_the_job_within_seconds(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_api: aioresponses,
    hass_storage: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job's thread ends promptly at shutdown and its checkpoint stays."""
    history = History(_records(dt_util.utcnow() - timedelta(days=3), dt_util.utcnow()))
    history.hold_at = 2
    mock_api.get(HISTORY_URL, callback=history.serve, repeat=True)
    ended = threading.Event()
    run = BackfillWorker.run

    def run_and_tell(worker: BackfillWorker) -> None:
        """Run the worker and note when its thread is done."""
        try:
            run(worker)
        finally:
            ended.set()

    monkeypatch.setattr(BackfillWorker, "run", run_and_tell)
    await hass.services.async_call(DOMAIN, "backfill", {"days": 3}, blocking=True)
    await history.held.wait()

    stopping = time.monotonic()
    await hass.async_stop()
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, ended.wait, 5)
    assert time.monotonic() - stopping < 5

    key = f"{DOMAIN}.backfill.{init_integration.entry_id}"
    [saved] = hass_storage[key]["data"]["jobs"].values()
    assert saved["pages_done"] == 1


async def test_disabled_and_deleted_sensors_are_skipped_and_reported(
    hass: HomeAssistant, init_integration: MockConfigEntry, mock_api: aioresponses
) -> None:
    """A disabled sensor gets no statistics; it and a deleted one are reported."""
    registry = er.async_get(hass)
    humidity = _entity_id(hass, "humidity")
    registry.async_update_entity(humidity, disabled_by=er.RegistryEntryDisabler.USER)
    registry.async_remove(_entity_id(hass, "dewPoint"))
    end = _hour_start(dt_util.utcnow())
    records = [r | {"humidity": 50} for r in _records(end - 5 * HOUR, end)]
    mock_api.get(HISTORY_URL, callback=History(records).serve, repeat=True)

    event = await _backfill(hass, {"days": 1})

    assert event["status"] == "completed"
    assert event["skipped"] == ["dewPoint", humidity]
    rows = await _statistics(
        hass, end - 6 * HOUR, {humidity, _entity_id(hass, "tempf")}
    )
    assert humidity not in rows
    assert len(rows[_entity_id(hass, "tempf")]) == 5


async def test_empty_pages_are_probed_past(
    hass: HomeAssistant, init_integration: MockConfigEntry, mock_api: aioresponses
) -> None:
    """A station silent for three days is no start of its history."""
    end = _hour_start(dt_util.utcnow())
    records = _records(end - timedelta(days=8), end - timedelta(days=5)) + _records(
        end - timedelta(days=2), end
    )
    history = History(records)
    # Like the real API may, answer only from the day before endDate.
    mock_api.get(HISTORY_URL, callback=history.serve_one_day, repeat=True)

    event = await _backfill(hass, {"days": 8})

    assert event["status"] == "completed"
    assert event["hours"] == (3 + 2) * 24
    assert event["records"] == len(records)


async def test_hours_stay_utc_across_a_daylight_saving_change(
    hass: HomeAssistant, init_integration: MockConfigEntry, mock_api: aioresponses
) -> None:
    """The night clocks fall back has 25 local hours: 25 distinct rows, none moved."""
    await hass.config.async_set_time_zone("America/New_York")
    # 2025-11-02 01:00-02:00 happened twice in New York.
    local_day = datetime(2025, 11, 2, tzinfo=dt_util.get_time_zone("America/New_York"))
    start = dt_util.as_utc(local_day)
    end = dt_util.as_utc(local_day + timedelta(days=1))
    records = _records(start - HOUR, end)
    mock_api.get(HISTORY_URL, callback=History(records).serve, repeat=True)

    event = await _backfill(hass, {"start": start.isoformat(), "end": end.isoformat()})

    assert event["status"] == "completed"
    temperature = _entity_id(hass, "tempf")
    rows = (await _statistics(hass, start, {temperature}))[temperature]
    starts = [dt_util.utc_from_timestamp(row["start"]) for row in rows]
    assert starts == [start + i * HOUR for i in range(25)]
    assert [row["mean"] for row in rows] == pytest.approx(
        [_celsius(40 + moment.hour) for moment in starts]
    )
