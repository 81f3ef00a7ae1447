"""A thin client for the Ambient Weather REST API.

It makes exactly one HTTP request per call and never sleeps: pacing belongs to the
request queue. Errors are typed by cause, and their text never contains the API
key or the application key, which the API wants in the query string.

Ambient counts a request when it arrives, and a request may leave well after the
queue let it go: behind a new connection's TLS handshake, or a busy event loop.
So a client on a session traced by `request_tracing` tells whoever set
`REQUEST_SENT` the moment each request's headers are written.
"""

from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime
import json
import math
from types import SimpleNamespace
from typing import Any

from aiohttp import (
    ClientError,
    ClientResponse,
    ClientSession,
    ClientTimeout,
    TraceConfig,
    TraceRequestHeadersSentParams,
)

type Record = dict[str, Any]

# Called on the event loop as a request's headers go out on the wire.
REQUEST_SENT: ContextVar[Callable[[], None] | None] = ContextVar(
    "ambient_request_sent", default=None
)

HISTORY_PAGE_LIMIT = 288
_INVALID = object()
REQUEST_TIMEOUT = ClientTimeout(total=30)


class AmbientError(Exception):
    """Base class for errors of the Ambient API."""


class AmbientAuthError(AmbientError):
    """The API key or the application key was refused."""


class AmbientRateLimitError(AmbientError):
    """The API answered 429: too many requests for a key."""


class AmbientServerError(AmbientError):
    """The API failed, timed out or could not be reached."""


class AmbientResponseError(AmbientError):
    """The API answered with something we cannot read."""


class AmbientClient:
    """Call the Ambient REST API for one account."""

    def __init__(
        self,
        session: ClientSession,
        api_key: str,
        application_key: str,
        origin: str,
    ) -> None:
        """Initialize the client."""
        self._session = session
        self._params = {"apiKey": api_key, "applicationKey": application_key}
        self._origin = origin.rstrip("/")

    async def devices(self) -> list[Record]:
        """Return the account's stations, each with its latest record."""
        devices = await self._get("/v1/devices", {})
        for device in devices:
            if not isinstance(device, dict) or not isinstance(
                device.get("macAddress"), str
            ):
                raise AmbientResponseError("A device has no MAC address")
        return devices

    async def device_history(
        self, mac: str, end: datetime, limit: int = HISTORY_PAGE_LIMIT
    ) -> list[Record]:
        """Return up to `limit` records at or before `end`, newest first."""
        if not 2 <= limit <= HISTORY_PAGE_LIMIT:
            # limit=1 often returns nothing at all (AMBIENT_API.md, section 3).
            raise ValueError(f"limit must be 2..{HISTORY_PAGE_LIMIT}")
        params = {"endDate": str(int(end.timestamp() * 1000)), "limit": str(limit)}
        records = await self._get(f"/v1/devices/{mac}", params)
        for record in records:
            if not isinstance(record, dict) or type(record.get("dateutc")) is not int:
                raise AmbientResponseError("A record has no dateutc")
        return records

    async def _get(self, path: str, params: dict[str, str]) -> list[Any]:
        """Send one GET request and return its JSON array."""
        try:
            async with self._session.get(
                self._origin + path,
                params=self._params | params,
                timeout=REQUEST_TIMEOUT,
                trace_request_ctx=REQUEST_SENT.get(),
            ) as response:
                body = await response.text()
                return _parse(response, body)
        except TimeoutError:
            error = AmbientServerError(f"Timed out requesting {path}")
        except ClientError as err:
            # aiohttp quotes the URL, keys included, in some messages: raising
            # outside the handler keeps it out of __context__ as well.
            error = AmbientServerError(f"Could not reach the API: {type(err).__name__}")
        raise error


def request_tracing() -> TraceConfig:
    """Return the trace that reports when each request was sent."""
    trace = TraceConfig()
    trace.on_request_headers_sent.append(_async_headers_sent)
    return trace


async def _async_headers_sent(
    session: ClientSession,
    context: SimpleNamespace,
    params: TraceRequestHeadersSentParams,
) -> None:
    """Tell the request's sender that its headers are going out."""
    if (sent := context.trace_request_ctx) is not None:
        sent()


def _parse(response: ClientResponse, body: str) -> list[Any]:
    """Return the JSON array of a response or raise the error it stands for."""
    # A page is some 130 kB of JSON, decoded on the event loop: decode it once.
    try:
        data = json.loads(body)
    except ValueError:
        data = _INVALID
    code = _error_code(data)
    status = response.status
    if status == 429 or code == "above-user-rate-limit":
        raise AmbientRateLimitError("Rate limited by the API")
    if code == "unknown-error" or status >= 500:
        raise AmbientServerError(f"The API failed (HTTP {status}, {code or 'no code'})")
    if code in ("date-invalid", "macAddress-missing"):
        raise AmbientResponseError(f"The API refused the request ({code})")
    if status in (401, 403) or code.endswith(("-invalid", "-missing")):
        raise AmbientAuthError(f"The API refused the keys ({code or status})")
    if status != 200 or code:
        raise AmbientResponseError(f"Unexpected answer (HTTP {status}, {code})")
    if data is _INVALID:
        raise AmbientResponseError("The API answered with invalid JSON")
    if not isinstance(data, list):
        raise AmbientResponseError("The API answered with something else than a list")
    return data


def _error_code(data: Any) -> str:
    """Return the `error` code of a decoded error body, or an empty string."""
    code = data.get("error") if isinstance(data, dict) else None
    return code if isinstance(code, str) else ""


def to_number(value: object) -> float | None:
    """Return a finite number from an API value, which may be a string or null."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
