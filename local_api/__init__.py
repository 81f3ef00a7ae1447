"""A local server that answers like Ambient Weather's REST API, for demos and tests."""

from .data import Station, Timeline, load_records, station_a
from .server import LocalAmbientServer, ServedRequest

__all__ = [
    "LocalAmbientServer",
    "ServedRequest",
    "Station",
    "Timeline",
    "load_records",
    "station_a",
]
