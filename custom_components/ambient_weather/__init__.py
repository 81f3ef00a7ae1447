"""The Ambient Weather integration."""

from homeassistant.const import EVENT_HOMEASSISTANT_STOP, Platform
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.start import async_at_started
from homeassistant.helpers.typing import ConfigType

from .backfill import BackfillManager, async_remove_store
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

    backfill = BackfillManager(hass, entry)
    await backfill.async_load()
    entry.runtime_data = AmbientRuntimeData(client, queue, coordinator, backfill)

    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)

    # Resume interrupted backfills and fill a gap since the last poll once Home
    # Assistant runs; from then on, every successful poll checks for a gap.
    @callback
    def _async_started(_: HomeAssistant) -> None:
        """Resume backfills and watch the polls."""
        backfill.async_resume()
        backfill.async_poll_succeeded()

        @callback
        def _async_polled() -> None:
            """Look for a gap after each successful poll."""
            if coordinator.last_update_success:
                backfill.async_poll_succeeded()

        entry.async_on_unload(coordinator.async_add_listener(_async_polled))

    entry.async_on_unload(async_at_started(hass, _async_started))

    @callback
    def _async_stopping(_: Event) -> None:
        """Stop the backfills; they resume at the next start."""
        backfill.async_stop()

    entry.async_on_unload(
        hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _async_stopping)
    )

    return True


async def async_unload_entry(hass: HomeAssistant, entry: AmbientConfigEntry) -> bool:
    """Unload a config entry, stopping its backfills and releasing its queue."""
    runtime = entry.runtime_data
    runtime.backfill.async_stop()
    if unloaded := await hass.config_entries.async_unload_platforms(entry, PLATFORMS):
        await async_release_queue(hass, runtime.queue)
    return unloaded


async def async_remove_entry(hass: HomeAssistant, entry: AmbientConfigEntry) -> None:
    """Forget the checkpoints of a removed entry."""
    await async_remove_store(hass, entry.entry_id)
