"""Tests for the backfill action: what it writes into long-term statistics."""

from datetime import datetime, timedelta
import math
from typing import Any

from aioresponses import CallbackResult, aioresponses
from freezegun.api import FrozenDateTimeFactory
import probatio
import pytest
from yarl import URL

from homeassistant.components.recorder import get_instance
from homeassistant.components.recorder.models import (
    StatisticData,
    StatisticMeanType,
    StatisticMetaData,
)
from homeassistant.components.recorder.statistics import (
    async_import_statistics,
    get_metadata,
    statistics_during_period,
)
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
)
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
)

from custom_components.ambient_weather import backfill_worker
from custom_components.ambient_weather.const import DOMAIN, EVENT_BACKFILL_FINISHED

from .conftest import API_KEY, APPLICATION_KEY, HISTORY_URL, MAC

MM_PER_INCH = 25.4


def _celsius(fahrenheit: float) -> float:
    """Convert as Home Assistant shows temperatures in a metric setup."""
    return (fahrenheit - 32) * 5 / 9


def _history(first_hour: datetime) -> list[dict[str, Any]]:
    """Return two hours of 5-minute records, oldest first, with traps."""
    # Hour one: temperature climbs 50..61 °F, rain 0.2 in, the wind swings
    # around north (350° and 10°).
    rain_one = [0, 0, 0, 0, 0, 0, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2]
    records: list[dict[str, Any]] = [
        {
            "tempf": 50 + i,
            "dailyrainin": rain,
            "winddir": 350 if i % 2 else 10,
            "humidity": "55",
        }
        for i, rain in enumerate(rain_one)
    ]
    # Hour two: 68 °F; rain goes 0.2 -> 0.3, the console resets to 0.05, then
    # 0.1. One record lost its outdoor sensor and one has a null.
    rain_two = [0.3, 0.3, 0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    records += [
        {"tempf": 68, "dailyrainin": rain, "winddir": 90, "humidity": 60}
        for rain in rain_two
    ]
    records[17] = {"tempinf": 70}
    records[18]["tempf"] = None
    start_ms = int(first_hour.timestamp() * 1000)
    for i, record in enumerate(records):
        record["dateutc"] = start_ms + i * 300_000
    return records


def _serve(records: list[dict[str, Any]]) -> Any:
    """Answer history requests as Ambient does: newest first, up to endDate."""

    def callback(url: URL, **kwargs: Any) -> CallbackResult:
        end = int(kwargs["params"]["endDate"])
        limit = int(kwargs["params"]["limit"])
        page = sorted(
            (r for r in records if r["dateutc"] <= end),
            key=lambda r: r["dateutc"],
            reverse=True,
        )
        return CallbackResult(payload=page[:limit])

    return callback


def _serve_two_hours(mock_api: aioresponses) -> datetime:
    """Serve `_history` from four hours ago; return its first hour."""
    first_hour = dt_util.utcnow().replace(minute=0, second=0, microsecond=0)
    first_hour -= timedelta(hours=4)
    mock_api.get(HISTORY_URL, callback=_serve(_history(first_hour)), repeat=True)
    return first_hour


async def _backfill_one_day(hass: HomeAssistant) -> None:
    """Back fill the last day and wait until the recorder has it."""
    await hass.async_block_till_done()
    await hass.services.async_call(DOMAIN, "backfill", {"days": 1}, blocking=True)
    await hass.async_block_till_done(wait_background_tasks=True)
    await async_wait_recording_done(hass)


def _entity_id(hass: HomeAssistant, field: str, mac: str = MAC) -> str:
    """Return the entity id of a station field."""
    entity_id = er.async_get(hass).async_get_entity_id(
        "sensor", DOMAIN, f"{mac}_{field}"
    )
    assert entity_id is not None
    return entity_id


async def _statistics(
    hass: HomeAssistant,
    start: datetime,
    entity_ids: set[str],
    units: dict[str, str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Return the hourly statistics rows of some entities from `start` on.

    Values come in each sensor's current unit, or per unit class in `units`.
    """
    return await get_instance(hass).async_add_executor_job(
        statistics_during_period,
        hass,
        start,
        None,
        entity_ids,
        "hour",
        units,
        {"mean", "min", "max", "state", "sum"},
    )


async def test_backfill_writes_hourly_statistics(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_api: aioresponses,
) -> None:
    """Two hours of records become two rows per sensor, computed by hand here."""
    first_hour = _serve_two_hours(mock_api)
    events = async_capture_events(hass, EVENT_BACKFILL_FINISHED)

    await _backfill_one_day(hass)

    assert len(events) == 1
    event = events[0].data
    assert event["status"] == "completed"
    assert event["mac"] == MAC
    assert event["records"] == 24
    assert event["hours"] == 2

    temperature = _entity_id(hass, "tempf")
    rain = _entity_id(hass, "dailyrainin")
    wind = _entity_id(hass, "winddir")
    humidity = _entity_id(hass, "humidity")
    stats = await _statistics(
        hass, first_hour - timedelta(hours=1), {temperature, rain, wind, humidity}
    )
    second_hour = first_hour + timedelta(hours=1)
    starts = [first_hour.timestamp(), second_hour.timestamp()]

    assert [row["start"] for row in stats[temperature]] == starts
    one, two = stats[temperature]
    assert one["mean"] == pytest.approx(_celsius(55.5))
    assert one["min"] == pytest.approx(_celsius(50))
    assert one["max"] == pytest.approx(_celsius(61))
    assert two["mean"] == pytest.approx(_celsius(68))

    # Hour one gains 0.2 in. Hour two gains 0.1 in, then the reset to 0.05
    # counts from zero, then 0.05 more: 0.2 in. With no history before them,
    # the sums start from zero.
    one, two = stats[rain]
    assert one["state"] == pytest.approx(0.2 * MM_PER_INCH)
    assert two["state"] == pytest.approx(0.1 * MM_PER_INCH)
    assert one["sum"] == pytest.approx(0.2 * MM_PER_INCH)
    assert two["sum"] == pytest.approx(0.4 * MM_PER_INCH)

    one, two = stats[wind]
    assert math.cos(math.radians(one["mean"])) == pytest.approx(1.0)
    assert two["mean"] == pytest.approx(90)

    one, two = stats[humidity]
    assert one["mean"] == pytest.approx(55)
    assert two["mean"] == pytest.approx(60)


async def test_backfill_metadata_matches_the_recorder(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_api: aioresponses,
) -> None:
    """Imported statistics carry the unit, unit class and mean type of the entity."""
    _serve_two_hours(mock_api)
    await _backfill_one_day(hass)

    ids = {_entity_id(hass, f) for f in ("tempf", "dailyrainin", "winddir")}
    metadata = await get_instance(hass).async_add_executor_job(
        lambda: get_metadata(hass, statistic_ids=ids)
    )
    temperature = metadata[_entity_id(hass, "tempf")][1]
    assert temperature["unit_of_measurement"] == "°C"
    assert temperature["unit_class"] == "temperature"
    assert temperature["mean_type"] == 1
    assert temperature["source"] == "recorder"
    rain = metadata[_entity_id(hass, "dailyrainin")][1]
    assert rain["has_sum"] is True
    assert rain["unit_of_measurement"] == "mm"
    assert rain["unit_class"] == "distance"
    assert metadata[_entity_id(hass, "winddir")][1]["mean_type"] == 2


async def test_backfill_keeps_statistics_in_their_unit(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_api: aioresponses,
) -> None:
    """New statistics take the unit a sensor shows; existing ones keep theirs.

    The recorder does the same: it converts states to the unit a statistic was
    first kept in, and the frontend shows the rows in the sensor's unit.
    """
    first_hour = _serve_two_hours(mock_api)
    temperature = _entity_id(hass, "tempf")
    rain = _entity_id(hass, "dailyrainin")
    registry = er.async_get(hass)

    # Rain is shown in inches before it has statistics; temperature is changed
    # to °F after its statistics began in °C.
    registry.async_update_entity_options(rain, "sensor", {"unit_of_measurement": "in"})
    await _backfill_one_day(hass)
    registry.async_update_entity_options(
        temperature, "sensor", {"unit_of_measurement": "°F"}
    )
    await _backfill_one_day(hass)

    metadata = await get_instance(hass).async_add_executor_job(
        lambda: get_metadata(hass, statistic_ids={temperature, rain})
    )
    assert metadata[temperature][1]["unit_of_measurement"] == "°C"
    assert metadata[rain][1]["unit_of_measurement"] == "in"
    kept = await _statistics(
        hass, first_hour, {temperature, rain}, {"temperature": "°C", "distance": "in"}
    )
    assert [row["mean"] for row in kept[temperature]] == pytest.approx(
        [_celsius(55.5), _celsius(68)]
    )
    assert [row["sum"] for row in kept[rain]] == pytest.approx([0.2, 0.4])
    # Shown in the sensor's unit, they are the station's own values again.
    shown = await _statistics(hass, first_hour, {temperature})
    assert [row["mean"] for row in shown[temperature]] == pytest.approx([55.5, 68])


async def test_backfill_after_a_unit_change_joins_sums_in_their_unit(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_api: aioresponses,
) -> None:
    """A range after older statistics joins them in their unit, not the shown one."""
    first_hour = _serve_two_hours(mock_api)
    second_hour = first_hour + timedelta(hours=1)
    rain = _entity_id(hass, "dailyrainin")
    await _backfill_one_day(hass)
    er.async_get(hass).async_update_entity_options(
        rain, "sensor", {"unit_of_measurement": "in"}
    )

    # Only the second hour again: it joins the first hour's sum, 0.2 in, which
    # is kept as 5.08 mm.
    await hass.services.async_call(
        DOMAIN, "backfill", {"start": second_hour.isoformat()}, blocking=True
    )
    await hass.async_block_till_done(wait_background_tasks=True)
    await async_wait_recording_done(hass)

    kept = await _statistics(hass, first_hour, {rain}, {"distance": "mm"})
    assert [row["sum"] for row in kept[rain]] == pytest.approx(
        [0.2 * MM_PER_INCH, 0.4 * MM_PER_INCH]
    )


async def test_backfill_skips_statistics_kept_in_a_foreign_unit(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_api: aioresponses,
) -> None:
    """Statistics in a unit the station's values cannot become are left alone."""
    first_hour = _serve_two_hours(mock_api)
    humidity = _entity_id(hass, "humidity")
    # As if the entity id once belonged to a sensor counted in per mille.
    foreign = StatisticMetaData(
        has_sum=False,
        mean_type=StatisticMeanType.ARITHMETIC,
        name=None,
        source="recorder",
        statistic_id=humidity,
        unit_class=None,
        unit_of_measurement="‰",
    )
    row = StatisticData(start=first_hour, mean=500.0, min=500.0, max=500.0)
    async_import_statistics(hass, foreign, [row])
    await async_wait_recording_done(hass)
    events = async_capture_events(hass, EVENT_BACKFILL_FINISHED)

    await _backfill_one_day(hass)

    assert events[0].data["status"] == "completed"
    assert events[0].data["skipped"] == [humidity]
    rows = await _statistics(hass, first_hour, {humidity})
    assert [r["mean"] for r in rows[humidity]] == [500.0]


@pytest.mark.usefixtures("init_integration")
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"days": 0}, "at least 1"),
        ({"days": 3651}, "at most 3650"),
        ({"days": 1.5}, "whole number"),
        ({"days": True}, "whole number"),
        ({}, "at least one of"),
        ({"days": 2, "start": "2026-01-01T00:00:00"}, "either days or start"),
    ],
)
async def test_backfill_rejects_bad_fields(
    hass: HomeAssistant, data: dict[str, Any], reason: str
) -> None:
    """Fields out of range or in conflict are refused by the schema."""
    with pytest.raises(probatio.Invalid, match=reason):
        await hass.services.async_call(DOMAIN, "backfill", data, blocking=True)


@pytest.mark.usefixtures("init_integration")
@pytest.mark.parametrize(
    ("data", "translation_key"),
    [
        ({"start": "2999-01-01T00:00:00"}, "invalid_range"),
        ({"start": "2000-01-01T00:00:00"}, "range_too_long"),
        ({"days": 1, "device_id": "not-a-station"}, "unknown_station"),
    ],
)
async def test_backfill_rejects_bad_requests(
    hass: HomeAssistant, data: dict[str, Any], translation_key: str
) -> None:
    """A range in the future or too long, or an unknown station, is refused."""
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(DOMAIN, "backfill", data, blocking=True)
    assert err.value.translation_key == translation_key


@pytest.mark.usefixtures("init_integration")
async def test_backfill_within_the_current_hour_is_refused(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory
) -> None:
    """No hour has ended since the start: the recorder fills the current one."""
    freezer.move_to("2026-12-04 08:40:00+00:00")
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            DOMAIN, "backfill", {"start": "2026-12-04T08:05:00+00:00"}, blocking=True
        )
    assert err.value.translation_key == "invalid_range"


async def test_backfill_outage_fails_the_job_without_leaking_keys(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_api: aioresponses,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page the API keeps failing is tried five times, then the job fails."""
    monkeypatch.setattr(backfill_worker, "PAGE_RETRY_DELAYS", (0.01,) * 4)
    mock_api.get(HISTORY_URL, status=503, body="<html>nginx</html>", repeat=True)
    events = async_capture_events(hass, EVENT_BACKFILL_FINISHED)

    await hass.services.async_call(DOMAIN, "backfill", {"days": 3}, blocking=True)
    await hass.async_block_till_done(wait_background_tasks=True)

    assert len(events) == 1
    event = events[0].data
    assert event["status"] == "failed"
    assert "HTTP 503" in event["error"]
    assert API_KEY not in str(event)
    assert APPLICATION_KEY not in str(event)
    assert event["records"] == 0
    history_calls = [
        call
        for (method, url), calls in mock_api.requests.items()
        if "/devices/" in str(url)
        for call in calls
    ]
    assert len(history_calls) == 5
