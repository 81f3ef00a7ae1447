"""A small client for the parts of Home Assistant's REST and websocket APIs the demo uses.

It onboards a fresh instance (owner user, then the remaining onboarding steps),
keeps the resulting access token, and offers one websocket connection on which
commands get their results by message id and subscribed events land in queues.
"""

import asyncio
from collections.abc import Mapping
import contextlib
import itertools
from typing import Any

import aiohttp


class DemoError(Exception):
    """Raised when Home Assistant does not answer the way the demo needs."""


class HomeAssistantClient:
    """Talk to one Home Assistant instance over REST and one websocket."""

    def __init__(self, session: aiohttp.ClientSession, origin: str) -> None:
        """Prepare a client for the instance at `origin`, e.g. http://127.0.0.1:8123."""
        self._session = session
        self.origin = origin
        self.client_id = f"{origin}/"
        self._token: str | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._results: dict[int, asyncio.Future[Any]] = {}
        self._events: dict[int, asyncio.Queue[dict[str, Any]]] = {}

    async def wait_until_up(self) -> None:
        """Wait until the HTTP API answers the unauthenticated onboarding probe."""
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with self._session.get(f"{self.origin}/api/onboarding") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.5)

    async def onboard(self, name: str, username: str, password: str) -> None:
        """Create the owner, log in and finish the other onboarding steps."""
        user = await self._post(
            "/api/onboarding/users",
            {
                "client_id": self.client_id,
                "name": name,
                "username": username,
                "password": password,
                "language": "en",
            },
            auth=False,
        )
        await self._login(user["auth_code"])
        await self._post("/api/onboarding/core_config", {})
        await self._post("/api/onboarding/analytics", {})
        await self._post(
            "/api/onboarding/integration",
            {
                "client_id": self.client_id,
                "redirect_uri": f"{self.origin}/?auth_callback=1",
            },
        )

    async def _login(self, auth_code: str) -> None:
        """Exchange an authorization code for an access token."""
        async with self._session.post(
            f"{self.origin}/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": auth_code,
                "client_id": self.client_id,
            },
        ) as response:
            if response.status != 200:
                raise DemoError(f"/auth/token answered {response.status}")
            self._token = (await response.json())["access_token"]

    async def get(self, path: str) -> Any:
        """GET a REST path with the access token and return the decoded body."""
        async with self._session.get(
            self.origin + path, headers=self._headers()
        ) as response:
            return await self._decode(path, response)

    async def post(self, path: str, payload: Mapping[str, Any]) -> Any:
        """POST JSON to a REST path with the access token."""
        return await self._post(path, payload)

    async def _post(
        self, path: str, payload: Mapping[str, Any], *, auth: bool = True
    ) -> Any:
        """POST JSON and return the decoded body, raising on an error status."""
        async with self._session.post(
            self.origin + path,
            json=payload,
            headers=self._headers() if auth else {},
        ) as response:
            return await self._decode(path, response)

    @staticmethod
    async def _decode(path: str, response: aiohttp.ClientResponse) -> Any:
        """Return the JSON body of a successful response."""
        if response.status >= 400:
            text = (await response.text())[:300]
            raise DemoError(f"{path} answered {response.status}: {text}")
        return await response.json()

    def _headers(self) -> dict[str, str]:
        """Return the bearer header."""
        if self._token is None:
            raise DemoError("not logged in")
        return {"Authorization": f"Bearer {self._token}"}

    async def connect_websocket(self) -> None:
        """Open and authenticate the websocket, then start reading it."""
        self._ws = await self._session.ws_connect(f"{self.origin}/api/websocket")
        await self._ws.receive_json()
        await self._ws.send_json({"type": "auth", "access_token": self._token})
        reply = await self._ws.receive_json()
        if reply.get("type") != "auth_ok":
            raise DemoError(f"websocket authentication failed: {reply.get('type')}")
        self._reader = asyncio.create_task(self._read(self._ws))

    async def close(self) -> None:
        """Close the websocket."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def command(self, command: str, **fields: Any) -> Any:
        """Send a websocket command and return its result."""
        if self._ws is None:
            raise DemoError("websocket not connected")
        message_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._results[message_id] = future
        await self._ws.send_json({"id": message_id, "type": command, **fields})
        return await future

    async def subscribe_events(self, event_type: str) -> asyncio.Queue[dict[str, Any]]:
        """Subscribe to one event type and return the queue its events arrive in."""
        if self._ws is None:
            raise DemoError("websocket not connected")
        message_id = next(self._ids)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._events[message_id] = queue
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._results[message_id] = future
        await self._ws.send_json(
            {"id": message_id, "type": "subscribe_events", "event_type": event_type}
        )
        await future
        return queue

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Route websocket messages to waiting commands and event queues."""
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = message.json()
            for item in data if isinstance(data, list) else [data]:
                self._dispatch(item)
        for future in self._results.values():
            if not future.done():
                future.set_exception(DemoError("websocket closed"))

    def _dispatch(self, item: dict[str, Any]) -> None:
        """Deliver one websocket message."""
        message_id = item.get("id")
        if item.get("type") == "event" and message_id in self._events:
            self._events[message_id].put_nowait(item["event"])
        elif item.get("type") == "result" and message_id in self._results:
            future = self._results.pop(message_id)
            if future.done():
                return
            if item.get("success"):
                future.set_result(item.get("result"))
            else:
                error = item.get("error", {})
                future.set_exception(
                    DemoError(f"{error.get('code')}: {error.get('message')}")
                )
