"""Tests for setting up and unloading Ambient Weather."""

from typing import Any

from aioresponses import aioresponses
import pytest

from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.ambient_weather.const import CONF_APPLICATION_KEY, DOMAIN
from custom_components.ambient_weather.queues import (
    DATA_QUEUES,
    async_acquire_queue,
    async_release_queue,
)

from .conftest import DEVICES_URL


async def test_setup_and_unload(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Loading starts the account's queue; unloading stops it."""
    assert init_integration.state is ConfigEntryState.LOADED
    queue = init_integration.runtime_data.queue
    assert queue.running
    assert queue.metrics.sent == 1

    await hass.config_entries.async_unload(init_integration.entry_id)
    await hass.async_block_till_done()

    assert init_integration.state is ConfigEntryState.NOT_LOADED
    assert not queue.running


@pytest.mark.parametrize(
    ("status", "body", "state"),
    [
        (503, "<html>nginx</html>", ConfigEntryState.SETUP_RETRY),
        (401, '{"error":"unknown-error"}', ConfigEntryState.SETUP_RETRY),
        (401, '{"error":"apiKey-invalid"}', ConfigEntryState.SETUP_ERROR),
    ],
)
async def test_setup_failures(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    status: int,
    body: str,
    state: ConfigEntryState,
) -> None:
    """Outages retry later; refused keys stop and ask for new ones."""
    mock_config_entry.add_to_hass(hass)
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, status=status, body=body, repeat=True)
        await hass.config_entries.async_setup(mock_config_entry.entry_id)
        await hass.async_block_till_done()

    assert mock_config_entry.state is state
    reauth = [
        flow
        for flow in hass.config_entries.flow.async_progress()
        if flow["context"]["source"] == SOURCE_REAUTH
    ]
    assert len(reauth) == (state is ConfigEntryState.SETUP_ERROR)
    # A failed setup lets go of the queue it took.
    assert not any(q.running for q in hass.data[DATA_QUEUES].queues.values())


async def test_removing_the_entry_forgets_its_checkpoints(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_storage: dict[str, Any],
) -> None:
    """A removed account leaves no backfill storage behind."""
    key = f"{DOMAIN}.backfill.{init_integration.entry_id}"
    await hass.async_block_till_done()
    hass_storage[key] = {"version": 1, "key": key, "data": {"jobs": {}}}

    await hass.config_entries.async_remove(init_integration.entry_id)
    await hass.async_block_till_done()

    assert key not in hass_storage


async def test_queue_follows_a_new_application_key(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_api: aioresponses,
) -> None:
    """Reloaded with another application key, the key's queue shares that one's budget."""
    old_queue = init_integration.runtime_data.queue
    old_budget = old_queue.budget
    other = async_acquire_queue(hass, "another-api-key", "another-application-key")

    hass.config_entries.async_update_entry(
        init_integration,
        data=init_integration.data | {CONF_APPLICATION_KEY: "another-application-key"},
    )
    await hass.config_entries.async_reload(init_integration.entry_id)
    await hass.async_block_till_done()

    queue = init_integration.runtime_data.queue
    assert queue is old_queue
    assert queue.budget is other.budget
    assert queue.budget is not old_budget
    await async_release_queue(hass, other)
