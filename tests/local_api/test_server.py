"""Tests for the local Ambient API server, over real HTTP on 127.0.0.1."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
import json
import logging
from typing import Any

import aiohttp
import pytest

from local_api import LocalAmbientServer, Station, Timeline, load_records, station_a
from local_api.data import WEEK_MS, iso_utc

pytestmark = pytest.mark.usefixtures("socket_enabled")

API_KEY = "a9f3c0de11b24c7d8e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1"
OTHER_API_KEY = "0b7e5d3c1a2f4e6d8c0b9a7f5e3d1c2b4a6f8e0d2c4b6a8f0e2d4c6b8a0f2e4d"
APPLICATION_KEY = "5c2e8a1f9d3b7e4a6c0f2d8b1e9a3c7f5d0b4e2a8c6f1d9b3e7a5c2f0d8b6e4a"
MAC = "00:0E:C6:20:0A:01"
HISTORY = f"/v1/devices/{MAC}"
# 2026-12-03T12:00:00Z, a Thursday.
NOW = 1796299200.0
NEWEST_RECORDED_MS = 1693540500000
OLDEST_RECORDED_MS = 1686169200000


class Clock:
    """A wall clock the tests move by hand."""

    def __init__(self, now: float) -> None:
        """Start at `now` (epoch seconds)."""
        self.now = now

    def __call__(self) -> float:
        """Return the current time."""
        return self.now


@dataclass
class Api:
    """A running local server plus a session that talks to it."""

    server: LocalAmbientServer
    origin: str
    session: aiohttp.ClientSession
    clock: Clock

    async def get(
        self,
        path: str,
        api_key: str | None = API_KEY,
        application_key: str | None = APPLICATION_KEY,
        **params: str,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        """GET a path with the keys and return status, decoded body and response."""
        query = dict(params)
        if api_key is not None:
            query["apiKey"] = api_key
        if application_key is not None:
            query["applicationKey"] = application_key
        async with self.session.get(self.origin + path, params=query) as response:
            text = await response.text()
        is_json = response.content_type == "application/json"
        return response.status, json.loads(text) if is_json else text, response


type ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api() -> AsyncIterator[ApiFactory]:
    """Return a factory that starts servers and stops them after the test."""
    started: list[Api] = []

    async def factory(**kwargs: Any) -> Api:
        """Start a server with the test keys and a hand-moved clock."""
        clock = Clock(NOW)
        server = LocalAmbientServer(
            [(API_KEY, APPLICATION_KEY), (OTHER_API_KEY, APPLICATION_KEY)],
            now=clock,
            **kwargs,
        )
        origin = await server.start()
        api = Api(server, origin, aiohttp.ClientSession(), clock)
        started.append(api)
        return api

    yield factory
    for api in started:
        await api.session.close()
        await api.server.stop()


@pytest.fixture
async def api(make_api: ApiFactory) -> Api:
    """Return a server without rate limits, for tests about the data."""
    return await make_api(enforce_rate_limits=False)


@pytest.fixture
async def limited_api(make_api: ApiFactory) -> Api:
    """Return a server that enforces Ambient's rate limits."""
    return await make_api()


def dateutcs(records: list[dict[str, Any]]) -> list[int]:
    """Return the dateutc of each record."""
    return [record["dateutc"] for record in records]


async def test_origin_is_loopback_with_a_port(api: Api) -> None:
    """The origin names 127.0.0.1 and the port actually bound."""
    assert api.origin.startswith("http://127.0.0.1:")
    assert int(api.origin.rsplit(":", 1)[1]) > 0


async def test_devices_lists_station_a_with_its_newest_visible_record(
    api: Api,
) -> None:
    """/v1/devices returns one device whose lastData is the newest past record."""
    status, devices, _ = await api.get("/v1/devices")

    assert status == 200
    assert len(devices) == 1
    device = devices[0]
    assert device["macAddress"] == MAC
    assert device["info"]["name"] == "Station A"
    last = device["lastData"]
    assert last["tz"] == "America/New_York"
    assert NOW * 1000 - 10 * 60_000 <= last["dateutc"] <= NOW * 1000
    assert last["date"] == iso_utc(last["dateutc"])
    assert {"baromrelin", "tempinf", "humidityin"} <= last.keys()


async def test_devices_lists_one_entry_per_station(make_api: ApiFactory) -> None:
    """With two stations, /v1/devices has two devices, each with its own MAC."""
    second = Station(
        mac_address="00:0E:C6:20:0A:02",
        name="Station B",
        location="Second copy",
        tz="America/Chicago",
        records=load_records(),
    )
    api = await make_api(stations=[station_a(), second], enforce_rate_limits=False)

    _, devices, _ = await api.get("/v1/devices")
    _, records, _ = await api.get("/v1/devices/00:0e:c6:20:0a:02", limit="3")

    assert [device["macAddress"] for device in devices] == [MAC, second.mac_address]
    assert [device["info"]["name"] for device in devices] == ["Station A", "Station B"]
    assert devices[1]["lastData"]["tz"] == "America/Chicago"
    assert len(records) == 3


async def test_history_is_newest_first_with_288_by_default(api: Api) -> None:
    """Without endDate and limit a page holds 288 records, newest first."""
    _, devices, _ = await api.get("/v1/devices")
    status, records, _ = await api.get(HISTORY)

    assert status == 200
    assert len(records) == 288
    times = dateutcs(records)
    assert times == sorted(times, reverse=True)
    assert len(set(times)) == 288
    assert records[0]["dateutc"] == devices[0]["lastData"]["dateutc"]


@pytest.mark.parametrize(
    ("limit", "expected"), [("10", 10), ("288", 288), ("5000", 288)]
)
async def test_limit_is_honoured_up_to_288(api: Api, limit: str, expected: int) -> None:
    """A limit below 288 is honoured and anything larger is capped at 288."""
    _, records, _ = await api.get(HISTORY, limit=limit)

    assert len(records) == expected


async def test_shift_is_whole_weeks_and_keeps_everything_in_the_past(
    api: Api,
) -> None:
    """Records move by whole weeks; visible ones are past and the newest is recent."""
    timeline = api.server.timeline(MAC)
    _, records, _ = await api.get(HISTORY)

    assert (timeline.newest_ms - NEWEST_RECORDED_MS) % WEEK_MS == 0
    assert NOW * 1000 <= timeline.newest_ms < NOW * 1000 + WEEK_MS
    assert all(record["dateutc"] <= NOW * 1000 for record in records)
    assert NOW * 1000 - records[0]["dateutc"] < timedelta(weeks=1) / timedelta(
        milliseconds=1
    )
    assert all(record["date"] == iso_utc(record["dateutc"]) for record in records)


async def test_records_keep_their_recorded_values(api: Api) -> None:
    """Apart from dateutc and date, a served record equals the recorded one."""
    recorded = load_records()
    shift = api.server.timeline(MAC).newest_ms - NEWEST_RECORDED_MS
    by_time = {record["dateutc"]: record for record in recorded}

    _, records, _ = await api.get(HISTORY, limit="50")

    for record in records:
        original = by_time[record["dateutc"] - shift]
        assert {k: v for k, v in record.items() if k not in ("dateutc", "date")} == {
            k: v for k, v in original.items() if k not in ("dateutc", "date")
        }


async def test_live_data_advances_with_the_clock(api: Api) -> None:
    """Moving the clock on makes newer records visible."""
    _, before, _ = await api.get("/v1/devices")
    api.clock.now += 3600

    _, after, _ = await api.get("/v1/devices")

    gained = after[0]["lastData"]["dateutc"] - before[0]["lastData"]["dateutc"]
    assert 50 * 60_000 <= gained <= 70 * 60_000


async def test_end_date_in_ms_is_inclusive(api: Api) -> None:
    """A record whose dateutc equals endDate is the first one returned."""
    _, page, _ = await api.get(HISTORY, limit="20")
    target = page[7]

    _, records, _ = await api.get(HISTORY, endDate=str(target["dateutc"]), limit="5")

    assert records[0] == target
    assert dateutcs(records) == dateutcs(page[7:12])


async def test_paging_by_end_date_is_seamless(api: Api) -> None:
    """Paging with endDate = oldest dateutc - 1 continues exactly where it stopped."""
    _, first, _ = await api.get(HISTORY, limit="100")
    _, second, _ = await api.get(
        HISTORY, endDate=str(first[-1]["dateutc"] - 1), limit="100"
    )
    _, both, _ = await api.get(HISTORY, limit="200")

    assert dateutcs(first + second) == dateutcs(both)


async def test_end_date_accepts_iso_8601(api: Api) -> None:
    """The endDate may be ISO 8601, with Z, an offset or no zone (read as UTC)."""
    _, page, _ = await api.get(HISTORY, limit="30")
    target = page[25]
    moment = datetime.fromtimestamp(target["dateutc"] / 1000, tz=UTC)

    for end_date in (
        target["date"],
        moment.astimezone(timezone(timedelta(hours=-4))).isoformat(),
        moment.replace(tzinfo=None).isoformat(),
    ):
        status, records, _ = await api.get(HISTORY, endDate=end_date, limit="2")
        assert status == 200
        assert records[0]["dateutc"] == target["dateutc"], end_date


async def test_unreadable_end_date_is_a_400(api: Api) -> None:
    """An endDate that is neither epoch ms nor ISO 8601 gets Ambient's error."""
    status, body, _ = await api.get(HISTORY, endDate="last tuesday")

    assert status == 400
    assert body == {
        "error": "date-invalid",
        "message": "Please refer to: http://momentjs.com/docs/#/parsing/string/",
    }


async def test_end_date_before_the_recording_gives_an_empty_page(api: Api) -> None:
    """Asking for records older than the oldest one returns []."""
    oldest = api.server.timeline(MAC).oldest_ms

    _, at_oldest, _ = await api.get(HISTORY, endDate=str(oldest))
    _, before, _ = await api.get(HISTORY, endDate=str(oldest - 1))

    assert dateutcs(at_oldest) == [oldest]
    assert before == []


async def test_end_date_in_the_future_shows_only_visible_records(api: Api) -> None:
    """Records later than now stay hidden even when endDate is later."""
    future = int(NOW * 1000) + 3 * 24 * 3600 * 1000

    _, records, _ = await api.get(HISTORY, endDate=str(future))

    assert records[0]["dateutc"] <= NOW * 1000


async def test_unknown_mac_gets_an_empty_list(api: Api) -> None:
    """A MAC the account does not have returns 200 and []."""
    status, records, _ = await api.get("/v1/devices/AA:BB:CC:DD:EE:FF")

    assert (status, records) == (200, [])


async def test_loop_span_repeats_the_recording_back_a_year(
    make_api: ApiFactory,
) -> None:
    """With loop_span a year, a page 300 days back is full and continuous."""
    api = await make_api(loop_span=timedelta(days=365), enforce_rate_limits=False)
    timeline = api.server.timeline(MAC)
    end = int(NOW * 1000) - 300 * 24 * 3600 * 1000

    _, records, _ = await api.get(HISTORY, endDate=str(end), limit="288")

    assert NOW * 1000 - timeline.oldest_ms >= 365 * 24 * 3600 * 1000
    assert len(records) == 288
    times = dateutcs(records)
    assert times == sorted(times, reverse=True)
    assert all((t - OLDEST_RECORDED_MS) % 60_000 == 0 for t in times)
    assert times[0] - times[-1] < 2 * 24 * 3600 * 1000


def test_loop_copies_join_without_overlap_or_gap() -> None:
    """Across the seam between two copies, time runs on in ~5-minute steps."""
    now_ms = int(NOW * 1000)
    timeline = Timeline(load_records(), now_ms=now_ms, loop_span=timedelta(days=120))
    single = Timeline(load_records(), now_ms=now_ms)
    seam = single.oldest_ms

    records = timeline.page(seam + 3600_000, 288)

    times = dateutcs(records)
    assert timeline.oldest_ms < seam
    assert seam in times
    assert all(newer > older for newer, older in pairwise(times))
    assert max(newer - older for newer, older in pairwise(times)) <= 10 * 60_000
    assert records[-1]["totalrainin"] > records[0]["totalrainin"]


@pytest.mark.parametrize(
    ("api_key", "application_key", "error"),
    [
        (None, APPLICATION_KEY, "apiKey-missing"),
        (API_KEY, None, "applicationKey-missing"),
        ("not-a-known-api-key", APPLICATION_KEY, "apiKey-invalid"),
        (API_KEY, "not-a-known-application-key", "applicationKey-invalid"),
    ],
)
async def test_key_errors_are_401_with_ambient_bodies(
    limited_api: Api, api_key: str | None, application_key: str | None, error: str
) -> None:
    """Each key problem gets 401 and its own error code, and no rate-limit strike."""
    status, body, _ = await limited_api.get(
        "/v1/devices", api_key=api_key, application_key=application_key
    )
    ok_status, _, _ = await limited_api.get("/v1/devices")

    assert (status, body) == (401, {"error": error})
    assert ok_status == 200


async def test_second_request_within_a_second_is_429(limited_api: Api) -> None:
    """Two back-to-back requests of one apiKey: the second gets Ambient's 429."""
    first, _, _ = await limited_api.get("/v1/devices")
    status, body, response = await limited_api.get(HISTORY)

    assert first == 200
    assert status == 429
    assert body == {"error": "above-user-rate-limit"}
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "Retry-After" not in response.headers
    assert limited_api.server.count(status=429) == 1


async def test_429_body_is_byte_exact(limited_api: Api) -> None:
    """The 429 body is exactly the 33 bytes Ambient sends."""
    url = f"{limited_api.origin}/v1/devices"
    params = {"apiKey": API_KEY, "applicationKey": APPLICATION_KEY}
    async with limited_api.session.get(url, params=params):
        pass
    async with limited_api.session.get(url, params=params) as response:
        raw = await response.read()

    assert raw == b'{"error":"above-user-rate-limit"}'


async def test_requests_spaced_over_a_second_are_served(limited_api: Api) -> None:
    """Requests of one apiKey 1.05 s apart are all served."""
    first, _, _ = await limited_api.get("/v1/devices")
    await asyncio.sleep(1.05)
    second, _, _ = await limited_api.get(HISTORY)

    assert (first, second) == (200, 200)
    assert min(limited_api.server.min_gap_per_api_key().values()) >= 1.0


async def test_refused_attempts_restart_the_one_second_wait(limited_api: Api) -> None:
    """A 429'd attempt counts, so retrying 0.6 s later keeps the apiKey refused."""
    first, _, _ = await limited_api.get("/v1/devices")
    await asyncio.sleep(0.6)
    early, _, _ = await limited_api.get("/v1/devices")
    await asyncio.sleep(0.6)
    retry, _, _ = await limited_api.get("/v1/devices")

    assert (first, early, retry) == (200, 429, 429)
    assert limited_api.server.log[2].monotonic - limited_api.server.log[0].monotonic > 1


async def test_application_key_allows_three_requests_per_second(
    limited_api: Api,
) -> None:
    """Refused attempts count, so a busy apiKey can push another over the app limit."""
    first_other, _, _ = await limited_api.get("/v1/devices", api_key=OTHER_API_KEY)
    await asyncio.sleep(0.4)
    burst = [(await limited_api.get("/v1/devices"))[0] for _ in range(3)]
    await asyncio.sleep(0.65)
    second_other, _, _ = await limited_api.get("/v1/devices", api_key=OTHER_API_KEY)

    assert first_other == 200
    assert burst == [200, 429, 429]
    # The other apiKey waited over a second, so only the application limit applies.
    assert limited_api.server.min_gap_per_api_key()[OTHER_API_KEY] >= 1.0
    assert second_other == 429


async def test_injected_503_is_an_nginx_page_on_matching_paths(api: Api) -> None:
    """inject(503, count=2, path_prefix) fails two history requests, not /devices."""
    api.server.inject(503, count=2, path_prefix="/v1/devices/")

    devices_status, _, _ = await api.get("/v1/devices")
    first, body, response = await api.get(HISTORY)
    second, _, _ = await api.get(HISTORY)
    third, records, _ = await api.get(HISTORY, limit="3")

    assert devices_status == 200
    assert (first, second, third) == (503, 503, 200)
    assert response.content_type == "text/html"
    assert "503 Service Temporarily Unavailable" in body
    assert "nginx" in body
    assert len(records) == 3


async def test_injected_faults_come_before_key_checks(api: Api) -> None:
    """An injected 500 answers even a request without keys, then stops."""
    api.server.inject(500, body='{"error":"unknown-error"}')

    status, body, _ = await api.get("/v1/devices", api_key=None)
    after, _, _ = await api.get("/v1/devices", api_key=None)

    assert (status, body) == (500, {"error": "unknown-error"})
    assert after == 401


async def test_injected_429_uses_ambient_body(api: Api) -> None:
    """inject(429) answers with Ambient's rate-limit body."""
    api.server.inject(429)

    status, body, _ = await api.get("/v1/devices")

    assert (status, body) == (429, {"error": "above-user-rate-limit"})


async def test_injected_delay_holds_the_response(api: Api) -> None:
    """inject_delay makes a client with a shorter timeout give up."""
    api.server.inject_delay(5.0, count=1)
    timeout = aiohttp.ClientTimeout(total=0.3)

    with pytest.raises(TimeoutError):
        async with api.session.get(
            f"{api.origin}/v1/devices",
            params={"apiKey": API_KEY, "applicationKey": APPLICATION_KEY},
            timeout=timeout,
        ):
            pass
    status, _, _ = await api.get("/v1/devices")

    assert status == 200


async def test_log_records_every_request_without_secrets(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request is logged once, path without query, key only as a short tag."""
    caplog.set_level(logging.INFO, logger="local_api")

    await api.get("/v1/devices")
    await api.get(HISTORY, endDate="nonsense")
    await api.get(HISTORY, api_key="wrong-key-0000")

    assert [(r.path, r.status) for r in api.server.log] == [
        ("/v1/devices", 200),
        (HISTORY, 400),
        (HISTORY, 401),
    ]
    assert api.server.log[0].api_key == API_KEY
    assert api.server.log[0].application_key == APPLICATION_KEY
    assert api.server.log[0].wall == NOW
    assert api.server.count() == 3
    assert api.server.count(status=200) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "local_api"]
    assert len(lines) == 3
    assert "a9f3…" in lines[0]
    assert "status=200" in lines[0]
    assert all(API_KEY not in line and APPLICATION_KEY not in line for line in lines)
    assert all("endDate" not in line for line in lines)
