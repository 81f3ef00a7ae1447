"""Tests for the Ambient Weather sensors."""

from aioresponses import aioresponses
import pytest

from homeassistant.const import STATE_UNAVAILABLE, UnitOfTemperature
from homeassistant.core import HomeAssistant, State
from homeassistant.helpers import device_registry as dr, entity_registry as er
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    mock_restore_cache_with_extra_data,
)

from custom_components.ambient_weather.const import DOMAIN

from .conftest import DEVICES_URL, MAC, load_fixture


def _entity_id(hass: HomeAssistant, field: str) -> str:
    """Return the entity id of a station field."""
    entity_id = er.async_get(hass).async_get_entity_id(
        "sensor", DOMAIN, f"{MAC}_{field}"
    )
    assert entity_id is not None
    return entity_id


@pytest.mark.usefixtures("init_integration")
async def test_sensor_states(hass: HomeAssistant) -> None:
    """Fields of lastData become sensors in the user's units."""
    temperature = hass.states.get(_entity_id(hass, "tempf"))
    assert temperature is not None
    assert temperature.attributes["unit_of_measurement"] == UnitOfTemperature.CELSIUS
    assert temperature.attributes["device_class"] == "temperature"
    assert temperature.attributes["state_class"] == "measurement"
    assert float(temperature.state) == pytest.approx((66.9 - 32) * 5 / 9)

    humidity = hass.states.get(_entity_id(hass, "humidity"))
    assert humidity is not None
    assert humidity.state == "30"

    rain = hass.states.get(_entity_id(hass, "dailyrainin"))
    assert rain is not None
    assert rain.attributes["state_class"] == "total_increasing"
    assert rain.attributes["unit_of_measurement"] == "mm"

    direction = hass.states.get(_entity_id(hass, "winddir"))
    assert direction is not None
    assert direction.attributes["state_class"] == "measurement_angle"
    assert direction.state == "58"

    # Fields the station does not report get no entity.
    registry = er.async_get(hass)
    assert registry.async_get_entity_id("sensor", DOMAIN, f"{MAC}_uv") is None


async def test_one_device_per_station(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """The station is one device and owns every entity."""
    device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, MAC), init_integration.entry_id
    )
    assert device is not None
    assert device.name == "My Weather Station"
    entities = er.async_entries_for_device(er.async_get(hass), device.id)
    # 17 fields of lastData and the backfill progress.
    assert len(entities) == 18
    # The queue depth is there for diagnosis, disabled until someone needs it.
    registry = er.async_get(hass)
    queue_sensor = registry.async_get_entity_id("sensor", DOMAIN, f"{MAC}_queue_depth")
    assert queue_sensor is not None
    assert registry.entities[queue_sensor].disabled


async def test_bad_values_make_sensors_unknown(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry
) -> None:
    """Nulls and text in a record give unknown states, not errors."""
    devices = load_fixture("devices.json")
    devices[0]["lastData"] |= {"tempf": "warm", "humidity": "45", "tempinf": None}
    mock_config_entry.add_to_hass(hass)
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=devices, repeat=True)
        await hass.config_entries.async_setup(mock_config_entry.entry_id)
        await hass.async_block_till_done()

    assert hass.states.get(_entity_id(hass, "tempf")).state == "unknown"
    assert float(hass.states.get(_entity_id(hass, "humidity")).state) == 45
    assert hass.states.get(_entity_id(hass, "tempinf")).state == STATE_UNAVAILABLE


async def test_backfill_progress_shows_the_last_job_after_a_restart(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry
) -> None:
    """With no job running, the progress sensor restores how the last one ended."""
    entity_id = "sensor.my_weather_station_backfill_progress"
    attributes = {
        "status": "completed",
        "pages_done": 31,
        "pages_total": 31,
        "hours_imported": 720,
        "ended": "2026-11-30T08:15:00+00:00",
        "friendly_name": "My Weather Station Backfill progress",
    }
    mock_restore_cache_with_extra_data(
        hass,
        [
            (
                State(entity_id, "100.0", attributes),
                {"native_value": 100.0, "native_unit_of_measurement": "%"},
            )
        ],
    )
    mock_config_entry.add_to_hass(hass)
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=load_fixture("devices.json"), repeat=True)
        await hass.config_entries.async_setup(mock_config_entry.entry_id)
        await hass.async_block_till_done()

    assert _entity_id(hass, "backfill_progress") == entity_id
    progress = hass.states.get(entity_id)
    assert progress is not None
    assert progress.state == "100.0"
    assert {key: progress.attributes.get(key) for key in attributes} == attributes
