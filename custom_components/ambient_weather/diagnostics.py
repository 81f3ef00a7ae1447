"""Diagnostics for Ambient Weather; keys, MACs and locations are redacted."""

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant

from .const import CONF_APPLICATION_KEY
from .coordinator import AmbientConfigEntry

TO_REDACT = {
    CONF_API_KEY,
    CONF_APPLICATION_KEY,
    "macAddress",
    "mac",
    "location",
    "coords",
    "address",
    "deviceId",
    "passkey",
}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: AmbientConfigEntry
) -> dict[str, Any]:
    """Return diagnostics for a config entry."""
    runtime = entry.runtime_data
    return {
        "entry": async_redact_data(entry.as_dict(), TO_REDACT),
        "stations": [
            async_redact_data(
                {"name": station.name, "last_data": station.last_data}, TO_REDACT
            )
            for station in runtime.coordinator.data.values()
        ],
        "queue": runtime.queue.metrics.as_dict() | {"depth": runtime.queue.depth()},
        "backfills": [
            async_redact_data(state.as_dict(), TO_REDACT)
            for state in runtime.backfill.states.values()
        ],
    }
