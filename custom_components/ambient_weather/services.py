"""Actions of the Ambient Weather integration: start and cancel backfills."""

import asyncio
from datetime import datetime, timedelta
from typing import Any

import probatio

from homeassistant.const import ATTR_DEVICE_ID
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import config_validation as cv, device_registry as dr
from homeassistant.util import dt as dt_util
from homeassistant.util.json import JsonValueType

from .const import DOMAIN, SERVICE_BACKFILL
from .coordinator import AmbientConfigEntry

SERVICE_CANCEL_BACKFILL = "cancel_backfill"
ATTR_DAYS = "days"
ATTR_START = "start"
ATTR_END = "end"
MAX_DAYS = 3650

_DEVICE_IDS = probatio.All(cv.ensure_list, [cv.string])
_EITHER = "give either days or start, not both"


def _whole_number(value: Any) -> Any:
    """Refuse a fraction or a boolean, which int() would quietly truncate."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise probatio.Invalid("expected a whole number of days")
    return value


BACKFILL_SCHEMA = probatio.All(
    probatio.Schema(
        {
            probatio.Optional(ATTR_DEVICE_ID): _DEVICE_IDS,
            probatio.Exclusive(ATTR_DAYS, "range", msg=_EITHER): probatio.All(
                _whole_number,
                probatio.Coerce(int),
                probatio.Range(min=1, max=MAX_DAYS),
            ),
            probatio.Exclusive(ATTR_START, "range", msg=_EITHER): cv.datetime,
            probatio.Optional(ATTR_END): cv.datetime,
        }
    ),
    probatio.AtLeastOne(ATTR_DAYS, ATTR_START),
)
CANCEL_SCHEMA = probatio.Schema({probatio.Optional(ATTR_DEVICE_ID): _DEVICE_IDS})

type _Station = tuple[AmbientConfigEntry, str, str]


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register the integration's actions."""
    hass.services.async_register(
        DOMAIN,
        SERVICE_BACKFILL,
        _async_backfill,
        schema=BACKFILL_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN, SERVICE_CANCEL_BACKFILL, _async_cancel, schema=CANCEL_SCHEMA
    )


async def _async_backfill(call: ServiceCall) -> ServiceResponse:
    """Start a backfill job for each chosen station and return its plan at once."""
    start, end = _time_range(call.data)
    stations = _stations(call.hass, call.data.get(ATTR_DEVICE_ID))
    for entry, mac, _ in stations:
        if entry.runtime_data.backfill.running(mac):
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="backfill_running",
                translation_placeholders={
                    "station": entry.runtime_data.coordinator.data[mac].name
                },
            )
    plans: list[JsonValueType] = []
    for entry, mac, device_id in stations:
        manager = entry.runtime_data.backfill
        state = manager.async_start(mac, device_id, start, end)
        plans.append(
            {
                "device_id": device_id,
                "station": entry.runtime_data.coordinator.data[mac].name,
                "start": state.start.isoformat(),
                "end": state.end.isoformat(),
                "pages": state.pages_total,
                "estimated_seconds": round(manager.estimated_seconds(state)),
            }
        )
    return {"stations": plans}


async def _async_cancel(call: ServiceCall) -> None:
    """Cancel the running backfills of the chosen stations; return once they end."""
    await asyncio.gather(
        *(
            entry.runtime_data.backfill.async_cancel(mac)
            for entry, mac, _ in _stations(call.hass, call.data.get(ATTR_DEVICE_ID))
        )
    )


def _time_range(data: dict[str, Any]) -> tuple[datetime, datetime]:
    """Return the UTC range a backfill call asks for."""
    now = dt_util.utcnow()
    end = dt_util.as_utc(data[ATTR_END]) if ATTR_END in data else now
    if ATTR_DAYS in data:
        start = end - timedelta(days=data[ATTR_DAYS])
    else:
        start = dt_util.as_utc(data[ATTR_START])
    end = min(end, now)
    # Jobs cover whole UTC hours from the one holding `start` to the one
    # holding `end`, which they leave out.
    if _hour(start) >= _hour(end):
        raise ServiceValidationError(
            translation_domain=DOMAIN, translation_key="invalid_range"
        )
    if end - start > timedelta(days=MAX_DAYS):
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="range_too_long",
            translation_placeholders={"days": str(MAX_DAYS)},
        )
    return start, end


def _hour(moment: datetime) -> datetime:
    """Return the start of the hour holding a moment."""
    return moment.replace(minute=0, second=0, microsecond=0)


def _stations(hass: HomeAssistant, device_ids: list[str] | None) -> list[_Station]:
    """Return the loaded entry, MAC and device id of each chosen station.

    No device ids, or an empty list, choose every station.
    """
    device_registry = dr.async_get(hass)
    entries: list[AmbientConfigEntry] = hass.config_entries.async_loaded_entries(DOMAIN)
    stations: list[_Station] = []
    for entry in entries:
        for mac in entry.runtime_data.coordinator.data:
            device = device_registry.async_get_device_by_identifier(
                (DOMAIN, mac), entry.entry_id
            )
            if device is not None:
                stations.append((entry, mac, device.id))
    if not device_ids:
        return stations
    chosen = [station for station in stations if station[2] in device_ids]
    if unknown := set(device_ids) - {station[2] for station in chosen}:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="unknown_station",
            translation_placeholders={"device_id": ", ".join(sorted(unknown))},
        )
    return chosen
