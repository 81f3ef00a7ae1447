"""An aiohttp server that answers like Ambient Weather's REST API, on loopback.

It serves `GET /v1/devices` and `GET /v1/devices/{macAddress}` from recorded
stations (see `data.py`), checks keys and rate limits the way Ambient does (see
`limits.py`), and lets tests inject faults and delays. Each request is checked in
this order: injected fault, missing or unknown key (401), rate limit (429), then
the data. Injected faults do not count toward the rate limits, and neither do
401s. Every request is logged, with keys reduced to a short tag.

Choices where Ambient's behaviour is not known:

* `endDate` is inclusive: a record whose `dateutc` equals it is returned.
* A MAC address the account does not have gets `200 []`, like a station without
  data, rather than a 404.
* `limit` is capped at 288; a value that is not a positive integer means 288.
* Any known `apiKey` may be used with any known `applicationKey`.
* An `endDate` without a UTC offset is read as UTC.
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
import json
import logging
import re
import time
from typing import Any

from aiohttp import web

from .data import Station, Timeline, station_a
from .faults import DEFAULT_BODIES, FALLBACK_BODY, Delay, Fault, take
from .limits import RateLimiter

LOGGER = logging.getLogger(__package__)

MAX_LIMIT = 288
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_MS_PATTERN = re.compile(r"-?\d+")
DATE_INVALID = {
    "error": "date-invalid",
    "message": "Please refer to: http://momentjs.com/docs/#/parsing/string/",
}
RATE_LIMITED = {"error": "above-user-rate-limit"}

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, kw_only=True)
class ServedRequest:
    """One request the server answered."""

    monotonic: float
    wall: float
    api_key: str
    application_key: str
    path: str
    status: int


def key_tag(key: str) -> str:
    """Return a short tag that identifies a key in logs without revealing it."""
    if not key:
        return "-"
    return key[:4] + "…" if len(key) > 8 else "…"


def json_response(status: int, payload: Any) -> web.Response:
    """Return compact JSON the way Ambient's Express server writes it."""
    return web.Response(
        status=status,
        text=json.dumps(payload, separators=(",", ":")),
        content_type="application/json",
        charset="utf-8",
    )


def parse_end_date(value: str) -> int | None:
    """Return `endDate` (epoch ms or ISO 8601) as epoch ms, or None if unreadable."""
    value = value.strip()
    if EPOCH_MS_PATTERN.fullmatch(value):
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)


def parse_limit(value: str | None) -> int:
    """Return the page size: the requested one capped at 288, else 288."""
    try:
        limit = int(value) if value is not None else MAX_LIMIT
    except ValueError:
        return MAX_LIMIT
    return min(limit, MAX_LIMIT) if limit > 0 else MAX_LIMIT


class LocalAmbientServer:
    """A local stand-in for Ambient's REST API, with a request log for tests."""

    def __init__(
        self,
        keys: Iterable[tuple[str, str]],
        *,
        stations: Sequence[Station] | None = None,
        loop_span: timedelta | None = None,
        now: Callable[[], float] = time.time,
        enforce_rate_limits: bool = True,
    ) -> None:
        """Serve `stations` (Station A by default) to the given key pairs."""
        pairs = list(keys)
        self._api_keys = {api_key for api_key, _ in pairs}
        self._application_keys = {application_key for _, application_key in pairs}
        self._now = now
        self._stations = list(stations) if stations is not None else [station_a()]
        now_ms = int(now() * 1000)
        self._timelines = {
            station.mac_address.upper(): Timeline(
                station.records, now_ms=now_ms, loop_span=loop_span
            )
            for station in self._stations
        }
        self._limiter = RateLimiter() if enforce_rate_limits else None
        self._faults: list[Fault] = []
        self._delays: list[Delay] = []
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.log: list[ServedRequest] = []

    @property
    def stations(self) -> list[Station]:
        """Return the stations this server offers."""
        return list(self._stations)

    def timeline(self, mac_address: str) -> Timeline:
        """Return the shifted records of one station."""
        return self._timelines[mac_address.upper()]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start listening and return the origin, such as http://127.0.0.1:8765."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/v1/devices", self._devices)
        app.router.add_get("/v1/devices/", self._devices)
        app.router.add_get("/v1/devices/{mac}", self._history)
        self._stopping.clear()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        return f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        """Release held-back responses and stop listening."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def inject(
        self,
        status: int,
        *,
        body: str | None = None,
        content_type: str | None = None,
        count: int = 1,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next `count` requests under `path_prefix` with `status`."""
        default_body, default_type = DEFAULT_BODIES.get(status, FALLBACK_BODY)
        self._faults.append(
            Fault(
                status=status,
                body=default_body if body is None else body,
                content_type=content_type or default_type,
                remaining=count,
                path_prefix=path_prefix,
            )
        )

    def inject_delay(
        self, seconds: float, count: int = 1, *, path_prefix: str | None = None
    ) -> None:
        """Hold back the next `count` responses under `path_prefix` for `seconds`."""
        self._delays.append(
            Delay(seconds=seconds, remaining=count, path_prefix=path_prefix)
        )

    def count(self, status: int | None = None, *, path_prefix: str = "") -> int:
        """Return how many logged requests had `status` (any, if None)."""
        return sum(
            1
            for served in self.log
            if (status is None or served.status == status)
            and served.path.startswith(path_prefix)
        )

    def min_gap_per_api_key(self) -> dict[str, float]:
        """Return the shortest gap between arrivals of requests per apiKey."""
        last: dict[str, float] = {}
        gaps: dict[str, float] = {}
        for served in self.log:
            if served.api_key in last:
                gap = served.monotonic - last[served.api_key]
                gaps[served.api_key] = min(gap, gaps.get(served.api_key, gap))
            last[served.api_key] = served.monotonic
        return gaps

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        """Apply faults, keys and rate limits, call the handler, log the result."""
        arrival = time.monotonic()
        api_key = request.query.get("apiKey", "")
        application_key = request.query.get("applicationKey", "")

        response: web.StreamResponse | None = self._injected(request.path)
        if response is None:
            response = self._refused(api_key, application_key, arrival)
        if response is None:
            try:
                response = await handler(request)
            except web.HTTPException as err:
                response = json_response(err.status, {"error": "not-found"})

        self._record(request.path, api_key, application_key, arrival, response.status)
        if delay := take(self._delays, request.path):
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay.seconds)
        return response

    def _injected(self, path: str) -> web.Response | None:
        """Return the injected fault for this path, if one is pending."""
        if (fault := take(self._faults, path)) is None:
            return None
        return web.Response(
            status=fault.status,
            text=fault.body,
            content_type=fault.content_type,
            charset="utf-8",
        )

    def _refused(
        self, api_key: str, application_key: str, arrival: float
    ) -> web.Response | None:
        """Return a 401 or 429 response if the keys or the rate refuse the request."""
        error = None
        if not api_key:
            error = "apiKey-missing"
        elif not application_key:
            error = "applicationKey-missing"
        elif api_key not in self._api_keys:
            error = "apiKey-invalid"
        elif application_key not in self._application_keys:
            error = "applicationKey-invalid"
        if error is not None:
            return json_response(401, {"error": error})
        if self._limiter and not self._limiter.attempt(
            api_key, application_key, arrival
        ):
            return json_response(429, RATE_LIMITED)
        return None

    def _record(
        self,
        path: str,
        api_key: str,
        application_key: str,
        arrival: float,
        status: int,
    ) -> None:
        """Add one served request to the log and write one log line."""
        wall = self._now()
        self.log.append(
            ServedRequest(
                monotonic=arrival,
                wall=wall,
                api_key=api_key,
                application_key=application_key,
                path=path,
                status=status,
            )
        )
        LOGGER.info(
            "%s GET %s key=%s status=%d",
            datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="milliseconds"),
            path,
            key_tag(api_key),
            status,
        )

    async def _devices(self, _request: web.Request) -> web.Response:
        """Answer `/v1/devices`: every station with its newest visible record."""
        now_ms = int(self._now() * 1000)
        devices = []
        for station in self._stations:
            latest = self.timeline(station.mac_address).latest(now_ms)
            devices.append(
                {
                    "macAddress": station.mac_address,
                    "info": {"name": station.name, "location": station.location},
                    "lastData": {**latest, "tz": station.tz} if latest else {},
                }
            )
        return json_response(200, devices)

    async def _history(self, request: web.Request) -> web.Response:
        """Answer `/v1/devices/{mac}`: visible records up to `endDate`, newest first."""
        now_ms = int(self._now() * 1000)
        end_ms = now_ms
        if (end_date := request.query.get("endDate")) is not None:
            if (parsed := parse_end_date(end_date)) is None:
                return json_response(400, DATE_INVALID)
            end_ms = min(parsed, now_ms)

        timeline = self._timelines.get(request.match_info["mac"].upper())
        if timeline is None:
            return json_response(200, [])
        limit = parse_limit(request.query.get("limit"))
        return json_response(200, timeline.page(end_ms, limit))
