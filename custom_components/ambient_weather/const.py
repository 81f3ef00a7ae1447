"""Constants for the Ambient Weather integration."""

from datetime import timedelta
import logging
from typing import Final

DOMAIN: Final = "ambient_weather"
LOGGER = logging.getLogger(__package__)

CONF_APPLICATION_KEY: Final = "application_key"
CONF_GAP_FILL: Final = "gap_fill"

# The origin of the Ambient REST API; the environment variable replaces it so
# the demo and the tests can point the integration at a local server.
DEFAULT_API_ORIGIN: Final = "https://rt.ambientweather.net"
API_ORIGIN_ENV: Final = "AMBIENT_WEATHER_API_URL"

# Ambient asks clients to poll /devices at most once a minute.
SCAN_INTERVAL = timedelta(seconds=60)

EVENT_BACKFILL_FINISHED: Final = "ambient_weather_backfill_finished"
SERVICE_BACKFILL: Final = "backfill"


def progress_signal(entry_id: str, mac: str) -> str:
    """Return the dispatcher signal that carries a station's backfill progress."""
    return f"{DOMAIN}_backfill_{entry_id}_{mac}"
