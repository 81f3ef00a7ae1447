"""Spacing as Ambient sees it: counted from when a request left, not when queued.

A request can leave long after the queue lets it go: behind a DNS lookup, a TCP
and TLS handshake, or a busy event loop. The next request, on the connection the
first one opened, leaves at once. Counted from the queue's decision, the two
would arrive closer than a second; counted from when the first request's
headers were written, they cannot. These tests put a slow name lookup in front
of the local Ambient API, which enforces the real limit over real HTTP.
"""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
import pytest
from yarl import URL

from custom_components.ambient_weather.api import AmbientClient, request_tracing
from custom_components.ambient_weather.request_queue import (
    MIN_SPACING,
    ApplicationKeyBudget,
    RequestQueue,
)
from local_api import LocalAmbientServer, station_a

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("socket_enabled")]

API_KEY = "spacing-api-key-5b7d9f1a3c5e7a9b1d3f5a7c9e1b3d5f"
APPLICATION_KEY = "spacing-app-key-2c4e6a8c0e2a4c6e8a0c2e4a6c8e0a2c"
HOST = "ambient.test"
MAC = station_a().mac_address
# Longer than the margin in MIN_SPACING by far: without the trace, the second
# request would arrive this much less than a spacing after the first.
LOOKUP_DELAY = 0.4


class SlowResolver(AbstractResolver):
    """Resolve HOST to loopback, slowly, as a distant DNS server might."""

    def __init__(self) -> None:
        """Count nothing yet."""
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Answer after LOOKUP_DELAY."""
        assert host == HOST
        self.lookups += 1
        await asyncio.sleep(LOOKUP_DELAY)
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        """Hold nothing to close."""


@pytest.fixture
async def server() -> AsyncIterator[tuple[LocalAmbientServer, int]]:
    """Serve station A on loopback, enforcing one request per second per key."""
    server = LocalAmbientServer([(API_KEY, APPLICATION_KEY)])
    origin = await server.start()
    yield server, URL(origin).port or 0
    await server.stop()


async def _two_requests(
    port: int, resolver: SlowResolver, **session_options: Any
) -> None:
    """Send a /devices and a history request through one queue, back to back."""
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector, **session_options) as session:
        client = AmbientClient(
            session, API_KEY, APPLICATION_KEY, f"http://{HOST}:{port}"
        )
        queue = RequestQueue("spacing", ApplicationKeyBudget())
        queue.start()
        try:
            async with asyncio.timeout(10 * MIN_SPACING):
                await asyncio.gather(
                    queue.submit(client.devices),
                    queue.submit(client.device_history, MAC, datetime.now(UTC)),
                )
        finally:
            await queue.async_stop()


async def test_slow_connection_does_not_bring_arrivals_closer(
    server: tuple[LocalAmbientServer, int],
) -> None:
    """The request after a slow lookup still arrives a full spacing later."""
    local, port = server
    resolver = SlowResolver()

    await _two_requests(port, resolver, trace_configs=[request_tracing()])

    # One lookup: the second request went out on the first one's connection.
    assert resolver.lookups == 1
    assert local.count() == 2
    assert local.count(429) == 0
    assert local.min_gap_per_api_key()[API_KEY] >= 1.0


async def test_untraced_session_lets_arrivals_come_closer(
    server: tuple[LocalAmbientServer, int],
) -> None:
    """Without the trace the queue counts from its own decision, and is refused.

    This is what the trace prevents: the lookup's delay comes off the gap the
    server sees, it answers 429, and the queue has to back off and retry.
    """
    local, port = server
    resolver = SlowResolver()

    await _two_requests(port, resolver)

    assert local.count(429) == 1
    assert local.count(200) == 2
