"""Fixtures for the tests that stop Home Assistant and start it again.

Each instance is booted the way Home Assistant boots: registries loaded from
storage, then the recorder, then (in the test) the config entries, then the
start. Instances of one test share the storage (`hass_storage`) and the
recorder's database file, so the second sees what the first left behind.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from homeassistant import loader
from homeassistant.bootstrap import DATA_REGISTRIES_LOADED
from homeassistant.const import EVENT_HOMEASSISTANT_CLOSE
from homeassistant.core import CoreState, HomeAssistant
from homeassistant.helpers import (
    area_registry as ar,
    category_registry as cr,
    device_registry as dr,
    entity_registry as er,
    floor_registry as fr,
    frame,
    issue_registry as ir,
    label_registry as lr,
)
from pytest_homeassistant_custom_component.common import (
    async_capture_events,
    async_test_home_assistant,
)
from pytest_homeassistant_custom_component.typing import RecorderInstanceContextManager

from custom_components.ambient_weather import request_queue

type HomeAssistantBooter = Callable[[], AbstractAsyncContextManager[HomeAssistant]]


@pytest.fixture(autouse=True)
def fast_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Space requests 10 ms apart: these tests mock the API."""
    monkeypatch.setattr(request_queue, "MIN_SPACING", 0.01)


@pytest.fixture
def recorder_db_url(tmp_path: Path) -> str:
    """Keep the recorder's database in a file that every instance opens."""
    return f"sqlite:///{tmp_path / 'home-assistant_v2.db'}"


@pytest.fixture
def boot_home_assistant(
    tmp_path: Path,
    hass_storage: dict[str, Any],
    async_test_recorder: RecorderInstanceContextManager,
) -> HomeAssistantBooter:
    """Return a way to boot instances that share storage and database."""

    @asynccontextmanager
    async def boot() -> AsyncIterator[HomeAssistant]:
        """Boot an instance up to its start; stop it on the way out if need be."""
        async with async_test_home_assistant(
            config_dir=str(tmp_path),
            load_registries=False,
            initial_state=CoreState.not_running,
        ) as hass:
            frame.async_setup(hass)
            await _async_load_registries(hass)
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
            closed = async_capture_events(hass, EVENT_HOMEASSISTANT_CLOSE)
            async with async_test_recorder(hass):
                try:
                    yield hass
                finally:
                    if not closed:
                        await hass.async_stop(force=True)

    return boot


async def _async_load_registries(hass: HomeAssistant) -> None:
    """Load the registries from storage, as a restart does.

    The plugin's own loading starts every instance with empty registries; a
    restart keeps the device and entity ids that a saved job refers to.
    """
    dr.async_setup(hass)
    for registry in (ar, cr, dr, er, fr, ir, lr):
        await registry.async_load(hass)
    hass.data[DATA_REGISTRIES_LOADED] = None
