"""Tests for the Ambient Weather REST client."""

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
import math
import re
from typing import Any

import aiohttp
from aioresponses import aioresponses
import pytest
from yarl import URL

from custom_components.ambient_weather.api import (
    AmbientAuthError,
    AmbientClient,
    AmbientError,
    AmbientRateLimitError,
    AmbientResponseError,
    AmbientServerError,
    to_number,
)

ORIGIN = "https://rt.ambientweather.net"
API_KEY = "apikey-OMGPUPPIES-7f3a9c"
APPLICATION_KEY = "appkey-SECRETKITTENS-2b8e41"
MAC = "00:0E:C6:20:0A:01"
DEVICES_URL = re.compile(rf"^{re.escape(ORIGIN)}/v1/devices\?")
HISTORY_URL = re.compile(rf"^{re.escape(ORIGIN)}/v1/devices/{re.escape(MAC)}\?")
# Some aiohttp errors quote the URL they tried, keys included.
CONNECTION_ERROR = aiohttp.ClientConnectionError(
    f"Cannot connect to {ORIGIN}/v1/devices"
    f"?apiKey={API_KEY}&applicationKey={APPLICATION_KEY}"
)
# 2026-12-03T12:00:00Z.
END = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
END_MS = 1796299200000
HTML_PAGE = "<html><body><h1>Service Unavailable</h1></body></html>"

DEVICE = {
    "macAddress": MAC,
    "info": {"name": "Backyard"},
    "lastData": {"dateutc": END_MS, "tempf": 71.6},
}
RECORDS = [
    {"dateutc": END_MS, "tempf": 71.6},
    {"dateutc": END_MS - 300_000, "tempf": 71.1},
]


@dataclass(frozen=True)
class ErrorCase:
    """A mocked answer of the API and the error the client must raise for it."""

    expected: type[AmbientError]
    response: dict[str, Any]
    endpoint: str = "devices"


def _case(
    case_id: str,
    expected: type[AmbientError],
    response: dict[str, Any],
    endpoint: str = "devices",
) -> Any:
    """Return one parametrized error case."""
    return pytest.param(ErrorCase(expected, response, endpoint), id=case_id)


def _code(status: int, code: str) -> dict[str, Any]:
    """Return an answer carrying one of Ambient's error codes."""
    return {"status": status, "payload": {"error": code}}


def _html(status: int) -> dict[str, Any]:
    """Return an answer with an HTML page, as a proxy in front of the API sends."""
    return {"status": status, "body": HTML_PAGE, "content_type": "text/html"}


def _bad_page(case_id: str, page: list[Any]) -> Any:
    """Return a history case whose records the client cannot use."""
    return _case(case_id, AmbientResponseError, {"payload": page}, "history")


ERROR_CASES = [
    _case("401-apikey-invalid", AmbientAuthError, _code(401, "apiKey-invalid")),
    _case("403-empty-body", AmbientAuthError, {"status": 403, "body": ""}),
    _case("200-appkey-missing", AmbientAuthError, _code(200, "applicationKey-missing")),
    _case("400-appkey-missing", AmbientAuthError, _code(400, "applicationKey-missing")),
    _case("429-rate-limit", AmbientRateLimitError, _code(429, "above-user-rate-limit")),
    _case("500-html", AmbientServerError, _html(500)),
    _case("503-html", AmbientServerError, _html(503)),
    # Ambient's servers failed this way in August 2019.
    _case("401-unknown-error", AmbientServerError, _code(401, "unknown-error")),
    _case("timeout", AmbientServerError, {"exception": TimeoutError()}),
    _case("connection-error", AmbientServerError, {"exception": CONNECTION_ERROR}),
    _case("200-not-json", AmbientResponseError, _html(200)),
    _case("200-object", AmbientResponseError, {"payload": {"devices": [DEVICE]}}),
    _case("device-without-mac", AmbientResponseError, {"payload": [{"info": {}}]}),
    _case("device-not-an-object", AmbientResponseError, {"payload": [MAC]}),
    _bad_page("record-without-dateutc", [{"tempf": 71.6}]),
    _bad_page("record-with-string-dateutc", [{"dateutc": str(END_MS)}]),
    _bad_page("record-with-float-dateutc", [{"dateutc": END_MS + 0.5}]),
    _case(
        "date-invalid",
        AmbientResponseError,
        _code(400, "date-invalid"),
        "history",
    ),
    _case(
        "macaddress-missing",
        AmbientResponseError,
        _code(400, "macAddress-missing"),
        "history",
    ),
]


@pytest.fixture
def mock_api() -> Iterator[aioresponses]:
    """Answer the client's HTTP requests with mocked responses."""
    with aioresponses() as mocked:
        yield mocked


@pytest.fixture
async def client() -> AsyncIterator[AmbientClient]:
    """Return a client with distinctive fake keys."""
    async with aiohttp.ClientSession() as session:
        yield AmbientClient(session, API_KEY, APPLICATION_KEY, ORIGIN)


def _mock(mock_api: aioresponses, case: ErrorCase) -> None:
    """Answer the case's endpoint with the case's response."""
    response = dict(case.response)
    if (exception := response.get("exception")) is not None:
        # A fresh copy per test, so no traceback carries over between tests.
        response["exception"] = type(exception)(*exception.args)
    mock_api.get(HISTORY_URL if case.endpoint == "history" else DEVICES_URL, **response)


def _request_url(mock_api: aioresponses) -> URL:
    """Return the URL, query included, of the one request the client sent."""
    ((method, url),) = mock_api.requests
    assert method == "GET"
    return url


def _call(client: AmbientClient, endpoint: str) -> Callable[[], Awaitable[Any]]:
    """Return the client call that the error case exercises."""
    if endpoint == "history":
        return lambda: client.device_history(MAC, END)
    return client.devices


def _texts_with_a_key(err: BaseException) -> list[str]:
    """Return the texts of an error and its chain that contain either key."""
    texts = [text for e in _error_chain(err) for text in (str(e), repr(e))]
    return [text for text in texts if API_KEY in text or APPLICATION_KEY in text]


def _error_chain(err: BaseException) -> list[BaseException]:
    """Return an error and every error reachable from it as cause or context."""
    chain: list[BaseException] = []
    todo: list[BaseException | None] = [err]
    while todo:
        current = todo.pop()
        if current is None or any(current is seen for seen in chain):
            continue
        chain.append(current)
        todo += [current.__cause__, current.__context__]
    return chain


async def test_devices_returns_the_stations(
    client: AmbientClient, mock_api: aioresponses
) -> None:
    """Devices returns the account's stations as the API sent them."""
    mock_api.get(DEVICES_URL, payload=[DEVICE])

    assert await client.devices() == [DEVICE]


async def test_devices_sends_both_keys_in_the_query(
    client: AmbientClient, mock_api: aioresponses
) -> None:
    """The API key and the application key travel as query parameters."""
    mock_api.get(DEVICES_URL, payload=[])

    await client.devices()

    url = _request_url(mock_api)
    assert url.path == "/v1/devices"
    assert dict(url.query) == {"apiKey": API_KEY, "applicationKey": APPLICATION_KEY}


async def test_devices_accepts_an_empty_account(
    client: AmbientClient, mock_api: aioresponses
) -> None:
    """An account without stations is an empty list, not an error."""
    mock_api.get(DEVICES_URL, payload=[])

    assert await client.devices() == []


async def test_device_history_returns_the_records(
    client: AmbientClient, mock_api: aioresponses
) -> None:
    """Device history returns the station's records as the API sent them."""
    mock_api.get(HISTORY_URL, payload=RECORDS)

    assert await client.device_history(MAC, END, 50) == RECORDS


@pytest.mark.parametrize(
    "end",
    [END, END.astimezone(timezone(timedelta(hours=-7)))],
    ids=["utc", "utc-7"],
)
async def test_device_history_sends_end_date_in_epoch_ms_and_limit(
    client: AmbientClient, mock_api: aioresponses, end: datetime
) -> None:
    """The end of the page goes out in epoch milliseconds, whatever its time zone."""
    mock_api.get(HISTORY_URL, payload=RECORDS)

    await client.device_history(MAC, end, 50)

    url = _request_url(mock_api)
    assert url.path == f"/v1/devices/{MAC}"
    assert url.query["endDate"] == str(END_MS)
    assert url.query["limit"] == "50"
    assert url.query["apiKey"] == API_KEY


async def test_device_history_asks_for_a_full_page_by_default(
    client: AmbientClient, mock_api: aioresponses
) -> None:
    """Without a limit, history asks for the largest page: one day of records."""
    mock_api.get(HISTORY_URL, payload=RECORDS)

    await client.device_history(MAC, END)

    assert _request_url(mock_api).query["limit"] == "288"


@pytest.mark.parametrize("limit", [0, 1, 289])
async def test_device_history_refuses_a_limit_out_of_range(
    client: AmbientClient, mock_api: aioresponses, limit: int
) -> None:
    """A limit of 1 (which the API answers with nothing) or past 288 is refused."""
    with pytest.raises(ValueError, match="limit"):
        await client.device_history(MAC, END, limit)

    assert not mock_api.requests


@pytest.mark.parametrize("case", ERROR_CASES)
async def test_error_is_typed_by_its_cause(
    client: AmbientClient, mock_api: aioresponses, case: ErrorCase
) -> None:
    """Each failure of the API raises the error type that names its cause."""
    _mock(mock_api, case)

    with pytest.raises(AmbientError) as excinfo:
        await _call(client, case.endpoint)()

    assert type(excinfo.value) is case.expected


async def test_device_history_refuses_a_boolean_dateutc(
    client: AmbientClient, mock_api: aioresponses
) -> None:
    """A dateutc of true is not a time, although Python counts a bool as an int."""
    mock_api.get(HISTORY_URL, payload=[{"dateutc": True, "tempf": 71.6}])

    with pytest.raises(AmbientResponseError):
        await client.device_history(MAC, END)


@pytest.mark.parametrize("case", ERROR_CASES)
async def test_error_text_never_holds_the_keys(
    client: AmbientClient, mock_api: aioresponses, case: ErrorCase
) -> None:
    """No error, nor any error chained to it, quotes the API or application key."""
    _mock(mock_api, case)

    with pytest.raises(AmbientError) as excinfo:
        await _call(client, case.endpoint)()

    assert _texts_with_a_key(excinfo.value) == []


async def test_unmocked_request_error_hides_the_keys(client: AmbientClient) -> None:
    """The connection error of aiohttp, which quotes the URL, does not leak the keys."""
    with aioresponses() as mocked:
        # Nothing is mocked: aioresponses refuses the connection, quoting the URL.
        with pytest.raises(AmbientServerError) as excinfo:
            await client.devices()
        assert mocked.requests

    assert _texts_with_a_key(excinfo.value) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12.0),
        (-3.5, -3.5),
        (0, 0.0),
        ("29.92", 29.92),
        (" 7 ", 7.0),
        ("-0.5", -0.5),
        ("abc", None),
        ("", None),
        (None, None),
        (True, None),
        (False, None),
        ([1], None),
        (math.nan, None),
        (math.inf, None),
        (-math.inf, None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_to_number(value: object, expected: float | None) -> None:
    """API values become finite floats; anything else becomes None."""
    assert to_number(value) == expected
