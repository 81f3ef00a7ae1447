"""The Ambient Weather integration."""

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.typing import ConfigType

from .const import DOMAIN
from .coordinator import (
    AmbientConfigEntry,
    AmbientDataUpdateCoordinator,
    AmbientRuntimeData,
    create_client,
    entry_keys,
)
from .queues import async_acquire_queue, async_release_queue
from .services import async_setup_services

PLATFORMS = [Platform.BINARY_SENSOR, Platform.SENSOR]

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Set up the Ambient Weather actions."""
    async_setup_services(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: AmbientConfigEntry) -> bool:
    """Set up an Ambient Weather account from a config entry."""
    api_key, application_key = entry_keys(entry)
    client = create_client(hass, api_key, application_key)
    queue = async_acquire_queue(hass, api_key, application_key)
    coordinator = AmbientDataUpdateCoordinator(hass, entry, client, queue)
    try:
        await coordinator.async_config_entry_first_refresh()
    except BaseException:
        await async_release_queue(hass, queue)
        raise

    entry.runtime_data = AmbientRuntimeData(client, queue, coordinator)

    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)

    return True


async def async_unload_entry(hass: HomeAssistant, entry: AmbientConfigEntry) -> bool:
    """Unload a config entry, stopping its backfills and releasing its queue."""
    runtime = entry.runtime_data
    for job in list(runtime.backfills.values()):
        job.cancel()
    if unloaded := await hass.config_entries.async_unload_platforms(entry, PLATFORMS):
        await async_release_queue(hass, runtime.queue)
    return unloaded
