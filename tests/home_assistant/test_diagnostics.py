"""Tests for the Ambient Weather diagnostics."""

import json

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.ambient_weather.diagnostics import (
    async_get_config_entry_diagnostics,
)

from .conftest import API_KEY, APPLICATION_KEY, MAC


async def test_diagnostics_show_the_queue_and_hide_secrets(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Diagnostics carry the station data and queue metrics, never keys or MAC."""
    diagnostics = await async_get_config_entry_diagnostics(hass, init_integration)
    text = json.dumps(diagnostics, default=str)

    assert API_KEY not in text
    assert APPLICATION_KEY not in text
    assert MAC not in text
    assert diagnostics["stations"][0]["last_data"]["tempf"] == 66.9
    assert diagnostics["queue"]["sent"] == 1
    assert diagnostics["queue"]["depth"] == {"config_flow": 0, "poll": 0, "backfill": 0}
    assert diagnostics["backfills"] == []
