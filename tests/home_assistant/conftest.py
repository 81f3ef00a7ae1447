"""Fixtures for the tests that run the integration in Home Assistant."""

from collections.abc import Iterator
import json
from pathlib import Path
import re
from typing import Any

from aioresponses import aioresponses
import pytest

from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.ambient_weather import request_queue
from custom_components.ambient_weather.const import CONF_APPLICATION_KEY, DOMAIN
from custom_components.ambient_weather.queues import key_label

API_KEY = "OMGPUPPIES-api-0123456789abcdef0123456789abcdef"
APPLICATION_KEY = "OMGKITTENS-app-fedcba9876543210fedcba98765432"
MAC = "00:11:22:33:44:55"
DEVICES_URL = re.compile(r"^https://rt\.ambientweather\.net/v1/devices\?.*$")
HISTORY_URL = re.compile(
    r"^https://rt\.ambientweather\.net/v1/devices/00:11:22:33:44:55\?.*$"
)
FIXTURES = Path(__file__).parent.parent / "fixtures"


def load_fixture(name: str) -> Any:
    """Return a JSON fixture."""
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(autouse=True)
def auto_enable(recorder_mock: Any, enable_custom_integrations: None) -> None:
    """Run every test with a real recorder and our integration loadable."""


@pytest.fixture(autouse=True)
def fast_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Space requests 10 ms apart: these tests mock the API."""
    monkeypatch.setattr(request_queue, "MIN_SPACING", 0.01)


@pytest.fixture
def mock_config_entry() -> MockConfigEntry:
    """Return the config entry of an account with one station."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="My Weather Station",
        data={CONF_API_KEY: API_KEY, CONF_APPLICATION_KEY: APPLICATION_KEY},
        unique_id=key_label(API_KEY),
    )


@pytest.fixture
def mock_api() -> Iterator[aioresponses]:
    """Answer /devices with the station fixture until a test says otherwise."""
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=load_fixture("devices.json"), repeat=True)
        yield mocked


@pytest.fixture
async def init_integration(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry, mock_api: aioresponses
) -> MockConfigEntry:
    """Set up the integration with the mocked API."""
    mock_config_entry.add_to_hass(hass)
    await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    return mock_config_entry
