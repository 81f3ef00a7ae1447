"""The coordinator that polls the Ambient API for the latest station data."""

from dataclasses import dataclass
import os
from typing import TYPE_CHECKING, override

from aiohttp import ClientSession

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_API_KEY, EVENT_HOMEASSISTANT_CLOSE
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed
from homeassistant.helpers.aiohttp_client import async_create_clientsession
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed
from homeassistant.util.hass_dict import HassKey

from .api import AmbientAuthError, AmbientClient, AmbientError, Record, request_tracing
from .const import (
    API_ORIGIN_ENV,
    CONF_APPLICATION_KEY,
    DEFAULT_API_ORIGIN,
    DOMAIN,
    LOGGER,
    SCAN_INTERVAL,
)
from .request_queue import Priority, QueueStoppedError, RequestQueue

if TYPE_CHECKING:
    from .backfill import BackfillManager

DATA_SESSION: HassKey[ClientSession] = HassKey(f"{DOMAIN}_session")


@dataclass(frozen=True, kw_only=True)
class AmbientStation:
    """One weather station and its latest record."""

    mac: str
    name: str
    last_data: Record


@dataclass
class AmbientRuntimeData:
    """What a config entry holds while it is loaded."""

    client: AmbientClient
    queue: RequestQueue
    coordinator: AmbientDataUpdateCoordinator
    backfill: BackfillManager


type AmbientConfigEntry = ConfigEntry[AmbientRuntimeData]


def api_origin() -> str:
    """Return the origin of the Ambient API, which tests and the demo replace."""
    return os.environ.get(API_ORIGIN_ENV) or DEFAULT_API_ORIGIN


@callback
def create_client(
    hass: HomeAssistant, api_key: str, application_key: str
) -> AmbientClient:
    """Return a client on the integration's HTTP session."""
    return AmbientClient(_async_session(hass), api_key, application_key, api_origin())


@callback
def _async_session(hass: HomeAssistant) -> ClientSession:
    """Return the HTTP session all our clients share, made on first use.

    Home Assistant's shared session cannot be traced, and the request queue
    needs the trace to learn when each request really left. The session uses
    Home Assistant's connection pool; it outlives config entries, which would
    otherwise detach it when the entry that happened to create it unloads.
    """
    if (session := hass.data.get(DATA_SESSION)) is None:
        session = async_create_clientsession(
            hass, auto_cleanup=False, trace_configs=[request_tracing()]
        )
        hass.data[DATA_SESSION] = session

        @callback
        def _async_detach(_: Event) -> None:
            """Let go of the session as Home Assistant closes."""
            session.detach()
            hass.data.pop(DATA_SESSION, None)

        hass.bus.async_listen_once(EVENT_HOMEASSISTANT_CLOSE, _async_detach)
    return session


def station_from_device(device: Record) -> AmbientStation:
    """Return the station that a /devices entry describes."""
    mac = device["macAddress"]
    info = device.get("info")
    name = info.get("name") if isinstance(info, dict) else None
    last_data = device.get("lastData")
    return AmbientStation(
        mac=mac,
        name=name.strip() if isinstance(name, str) and name.strip() else mac,
        last_data=last_data if isinstance(last_data, dict) else {},
    )


class AmbientDataUpdateCoordinator(DataUpdateCoordinator[dict[str, AmbientStation]]):
    """Poll the account's stations through the account's request queue."""

    config_entry: AmbientConfigEntry

    def __init__(
        self,
        hass: HomeAssistant,
        entry: AmbientConfigEntry,
        client: AmbientClient,
        queue: RequestQueue,
    ) -> None:
        """Initialize the coordinator."""
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=DOMAIN,
            update_interval=SCAN_INTERVAL,
        )
        self.client = client
        self.queue = queue

    @override
    async def _async_update_data(self) -> dict[str, AmbientStation]:
        """Fetch the latest record of every station."""
        try:
            devices = await self.queue.submit(
                self.client.devices, priority=Priority.POLL
            )
        except AmbientAuthError as err:
            raise ConfigEntryAuthFailed(
                translation_domain=DOMAIN, translation_key="invalid_auth"
            ) from err
        except (AmbientError, QueueStoppedError) as err:
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="update_failed",
                translation_placeholders={"error": str(err)},
            ) from err
        stations = (station_from_device(device) for device in devices)
        return {station.mac: station for station in stations}


def entry_keys(entry: ConfigEntry) -> tuple[str, str]:
    """Return the API key and application key of an entry."""
    return entry.data[CONF_API_KEY], entry.data[CONF_APPLICATION_KEY]
