"""Shared test configuration."""

import logging
from types import SimpleNamespace
from typing import Any

from aiohttp import ClientResponse
import aioresponses.core


class _MockedResponse(ClientResponse):
    """A response aioresponses can build with aiohttp 3.14.

    aiohttp 3.14 made `stream_writer` a required argument of ClientResponse, and
    aioresponses 0.7.9 (the newest) does not pass it. A mocked response is never
    written to, so a writer that reports nothing sent is enough.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Initialize the response with an idle stream writer."""
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


aioresponses.core.ClientResponse = _MockedResponse  # type: ignore[misc]


def pytest_configure(config: Any) -> None:
    """Keep the recorder's SQL echo out of failure reports."""
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
