"""Tests for the Ambient Weather config flow."""

from aioresponses import aioresponses
import pytest

from homeassistant.config_entries import SOURCE_USER
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.ambient_weather.const import (
    CONF_APPLICATION_KEY,
    CONF_GAP_FILL,
    DOMAIN,
)
from custom_components.ambient_weather.queues import key_label

from .conftest import API_KEY, APPLICATION_KEY, DEVICES_URL, load_fixture

USER_INPUT = {CONF_API_KEY: API_KEY, CONF_APPLICATION_KEY: APPLICATION_KEY}


async def test_user_flow_creates_entry(hass: HomeAssistant) -> None:
    """Valid keys create an entry named after the station."""
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=load_fixture("devices.json"))
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_USER}
        )
        assert result["type"] is FlowResultType.FORM
        assert result["step_id"] == "user"

        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], USER_INPUT
        )

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "My Weather Station"
    assert result["data"] == USER_INPUT
    assert result["result"].unique_id == key_label(API_KEY)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, {"error": "apiKey-invalid"}, "invalid_auth"),
        (401, {"error": "applicationKey-invalid"}, "invalid_auth"),
        (429, {"error": "above-user-rate-limit"}, "cannot_connect"),
        (503, "<html>503 Service Temporarily Unavailable</html>", "cannot_connect"),
    ],
)
async def test_user_flow_errors_then_recovers(
    hass: HomeAssistant, status: int, body: object, error: str
) -> None:
    """A refused key or an outage shows an error, and a retry succeeds."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_USER}
    )
    with aioresponses() as mocked:
        # A 429 is retried by the queue, so it must keep failing to surface.
        for _ in range(10):
            if isinstance(body, dict):
                mocked.get(DEVICES_URL, status=status, payload=body)
            else:
                mocked.get(DEVICES_URL, status=status, body=body)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                "custom_components.ambient_weather.request_queue.BACKOFF_FIRST", 0.001
            )
            result = await hass.config_entries.flow.async_configure(
                result["flow_id"], USER_INPUT
            )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": error}

    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=load_fixture("devices.json"))
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], USER_INPUT
        )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_flow_without_stations_aborts(hass: HomeAssistant) -> None:
    """An account without stations cannot be added."""
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=[])
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_USER}, data=USER_INPUT
        )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "no_devices"


async def test_same_account_twice_aborts(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry
) -> None:
    """One entry per API key."""
    mock_config_entry.add_to_hass(hass)
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=load_fixture("devices.json"))
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_USER}, data=USER_INPUT
        )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_reauth_updates_application_key(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry
) -> None:
    """Reauth keeps the account and stores the new application key."""
    mock_config_entry.add_to_hass(hass)
    result = await mock_config_entry.start_reauth_flow(hass)
    new_input = USER_INPUT | {CONF_APPLICATION_KEY: "OMGKITTENS-new-app-key"}
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=load_fixture("devices.json"), repeat=True)
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], new_input
        )
        await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert mock_config_entry.data[CONF_APPLICATION_KEY] == "OMGKITTENS-new-app-key"


async def test_reconfigure_checks_and_stores_new_keys(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry
) -> None:
    """Reconfigure refuses keys of another account and accepts the same one."""
    mock_config_entry.add_to_hass(hass)
    result = await mock_config_entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM

    other = {CONF_API_KEY: "OMGPUPPIES-other-account", CONF_APPLICATION_KEY: "x"}
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=load_fixture("devices.json"), repeat=True)
        refused = await hass.config_entries.flow.async_configure(
            result["flow_id"], other
        )
    assert refused["type"] is FlowResultType.ABORT
    assert refused["reason"] == "wrong_account"

    result = await mock_config_entry.start_reconfigure_flow(hass)
    new_input = USER_INPUT | {CONF_APPLICATION_KEY: "OMGKITTENS-rotated"}
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=load_fixture("devices.json"), repeat=True)
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], new_input
        )
        await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert mock_config_entry.data[CONF_APPLICATION_KEY] == "OMGKITTENS-rotated"


async def test_options_turn_gap_fill_off(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry
) -> None:
    """The options flow stores whether gaps are filled automatically."""
    mock_config_entry.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(mock_config_entry.entry_id)
    assert result["type"] is FlowResultType.FORM

    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_GAP_FILL: False}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert mock_config_entry.options == {CONF_GAP_FILL: False}


async def test_pasted_keys_are_trimmed(hass: HomeAssistant) -> None:
    """Spaces and line ends around pasted keys are dropped before use."""
    padded = {
        CONF_API_KEY: f"  {API_KEY}\n",
        CONF_APPLICATION_KEY: f"{APPLICATION_KEY} ",
    }
    with aioresponses() as mocked:
        mocked.get(DEVICES_URL, payload=load_fixture("devices.json"))
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_USER}, data=padded
        )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == USER_INPUT
