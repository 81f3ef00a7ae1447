"""Share one request queue per API key across config entries and flows.

A queue is stopped when its last user lets go, but never forgotten: when the key
is used again the same queue starts again, still knowing when it last sent a
request and whether it was backing off, so a config flow followed at once by
the entry's first poll keeps the spacing the API demands.
"""

from dataclasses import dataclass, field
import hashlib

from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN
from .request_queue import ApplicationKeyBudget, RequestQueue


@dataclass
class _Queues:
    """The running queues of this Home Assistant, and who uses them."""

    queues: dict[str, RequestQueue] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)
    budgets: dict[str, ApplicationKeyBudget] = field(default_factory=dict)


DATA_QUEUES: HassKey[_Queues] = HassKey(f"{DOMAIN}_queues")


def key_label(api_key: str) -> str:
    """Return a stable, non-secret label for an API key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


@callback
def async_acquire_queue(
    hass: HomeAssistant, api_key: str, application_key: str
) -> RequestQueue:
    """Return the running queue of an API key, starting it for the first user."""
    if (registry := hass.data.get(DATA_QUEUES)) is None:
        registry = hass.data[DATA_QUEUES] = _Queues()

        async def _async_stop_all(_: Event) -> None:
            """Stop every queue when Home Assistant stops."""
            for queue in registry.queues.values():
                await queue.async_stop()

        hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _async_stop_all)

    label = key_label(api_key)
    budget = registry.budgets.setdefault(
        key_label(application_key), ApplicationKeyBudget()
    )
    if (queue := registry.queues.get(label)) is None:
        queue = registry.queues[label] = RequestQueue(f"key {label}", budget)
    # After a reauth or reconfigure, the key may come with another application
    # key: count its requests against that one's budget.
    queue.budget = budget
    if not queue.running:
        queue.start()
    registry.users[label] = registry.users.get(label, 0) + 1
    return queue


async def async_release_queue(hass: HomeAssistant, queue: RequestQueue) -> None:
    """Stop a queue when its last user lets go of it; keep it for the next."""
    registry = hass.data[DATA_QUEUES]
    label = next((k for k, q in registry.queues.items() if q is queue), None)
    if label is None:
        return
    registry.users[label] -= 1
    if registry.users[label] == 0:
        await queue.async_stop()
