"""End to end: the integration against the local Ambient API over real HTTP."""

from collections.abc import AsyncIterator
from datetime import timedelta
import statistics

import pytest

from homeassistant.config_entries import SOURCE_USER
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import async_capture_events
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
)

from custom_components.ambient_weather.const import (
    API_ORIGIN_ENV,
    CONF_APPLICATION_KEY,
    DOMAIN,
    EVENT_BACKFILL_FINISHED,
)
from local_api import LocalAmbientServer

from .test_backfill import _celsius, _entity_id, _statistics

API_KEY = "e2e-api-key-6f1c0d9a8b7e6f5a4b3c2d1e0f9a8b7c"
APPLICATION_KEY = "e2e-app-key-1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d"

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("socket_enabled")]


@pytest.fixture(name="fast_queue")
def real_spacing() -> None:
    """Keep the queue's real spacing: the server enforces Ambient's limits."""


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalAmbientServer]:
    """Serve station A on loopback and point the integration at it."""
    server = LocalAmbientServer([(API_KEY, APPLICATION_KEY)])
    origin = await server.start()
    monkeypatch.setenv(API_ORIGIN_ENV, origin)
    yield server
    await server.stop()


async def test_backfill_over_http(
    hass: HomeAssistant, server: LocalAmbientServer
) -> None:
    """Add the account, backfill three days, and check what the server saw."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_USER}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {CONF_API_KEY: API_KEY, CONF_APPLICATION_KEY: APPLICATION_KEY},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()

    events = async_capture_events(hass, EVENT_BACKFILL_FINISHED)
    end = dt_util.utcnow().replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=3)
    await hass.services.async_call(
        DOMAIN,
        "backfill",
        {"start": start.isoformat(), "end": end.isoformat()},
        blocking=True,
    )
    await hass.async_block_till_done(wait_background_tasks=True)
    await async_wait_recording_done(hass)

    assert len(events) == 1
    event = events[0].data
    assert event["status"] == "completed", event.get("error")
    assert event["hours"] == 72

    # The server saw Ambient's limits kept: no 429, requests a second apart.
    assert server.count(429) == 0
    assert server.min_gap_per_api_key()[API_KEY] >= 1.0
    history_requests = server.count(200, path_prefix="/v1/devices/")
    assert history_requests == pytest.approx(event["records"] / 288, abs=1.5)

    # One hour in the middle matches the mean of the records the server holds.
    hour = start + timedelta(days=1, hours=5)
    timeline = server.timeline(server.stations[0].mac_address)
    hour_ms = int(hour.timestamp() * 1000)
    records = [
        r
        for r in timeline.page(hour_ms + 3_599_999, 288)
        if r["dateutc"] >= hour_ms and r.get("tempf") is not None
    ]
    temperature = _entity_id_for(hass, server)
    rows = await _statistics(hass, hour, {temperature})
    assert rows[temperature][0]["start"] == hour.timestamp()
    assert rows[temperature][0]["mean"] == pytest.approx(
        _celsius(statistics.fmean(r["tempf"] for r in records))
    )


def _entity_id_for(hass: HomeAssistant, server: LocalAmbientServer) -> str:
    """Return the outdoor temperature sensor of the served station."""
    mac = server.stations[0].mac_address
    return _entity_id(hass, "tempf", mac)
