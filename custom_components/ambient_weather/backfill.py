"""Backfill jobs as Home Assistant sees them: started, saved, resumed, announced.

The manager of a config entry starts one worker thread per station, keeps each
job's checkpoint in Home Assistant's storage so that a job interrupted by a
restart resumes by itself, tells the progress sensors how far each job is, and
fires `ambient_weather_backfill_finished` when a job ends. It also notices when
polling resumes after more than an hour without data (Home Assistant was down,
or the Ambient cloud was unreachable) and fills that gap.
"""

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
import threading
from typing import Any

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from .backfill_worker import BackfillCancelledError, BackfillState, BackfillWorker
from .const import (
    CONF_GAP_FILL,
    DOMAIN,
    EVENT_BACKFILL_FINISHED,
    LOGGER,
    progress_signal,
)
from .coordinator import AmbientConfigEntry
from .request_queue import MIN_SPACING, QueueStoppedError

STORAGE_VERSION = 1
GAP_THRESHOLD = timedelta(hours=1)
SAVE_DELAY = 10
CANCEL_WAIT = 10.0
POLL_SAVE = timedelta(minutes=15)


@dataclass(frozen=True)
class BackfillOutcome:
    """How a station's last job ended, for its progress sensor."""

    state: BackfillState
    status: str
    ended: datetime


def _store(hass: HomeAssistant, entry_id: str) -> Store[dict[str, Any]]:
    """Return the store of an entry's checkpoints and last poll."""
    return Store(hass, STORAGE_VERSION, f"{DOMAIN}.backfill.{entry_id}")


async def async_remove_store(hass: HomeAssistant, entry_id: str) -> None:
    """Delete what a removed entry kept."""
    await _store(hass, entry_id).async_remove()


class BackfillManager:
    """Run and remember the backfill jobs of one config entry."""

    def __init__(self, hass: HomeAssistant, entry: AmbientConfigEntry) -> None:
        """Initialize the manager."""
        self.hass = hass
        self.entry = entry
        self.states: dict[str, BackfillState] = {}
        self.outcomes: dict[str, BackfillOutcome] = {}
        self._cancels: dict[str, threading.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._user_cancelled: set[str] = set()
        self._store = _store(hass, entry.entry_id)
        self._saved_jobs: dict[str, dict[str, Any]] = {}
        self._last_poll: datetime | None = None
        self._last_poll_saved: datetime | None = None

    async def async_load(self) -> None:
        """Read the checkpoints and the time of the last successful poll."""
        data = await self._store.async_load() or {}
        self._saved_jobs = data.get("jobs", {})
        if last_poll := data.get("last_poll"):
            self._last_poll = dt_util.parse_datetime(last_poll)

    @callback
    def async_resume(self) -> None:
        """Restart every job a restart interrupted."""
        for mac, saved in list(self._saved_jobs.items()):
            if self.running(mac):
                # Started while Home Assistant was still starting: the saved
                # job is this one's checkpoint, not one to resume.
                continue
            if mac in self.entry.runtime_data.coordinator.data:
                self._async_run(BackfillState.from_dict(saved))
            else:
                del self._saved_jobs[mac]

    def running(self, mac: str) -> bool:
        """Return True while a station has a job."""
        return mac in self.states

    @callback
    def async_start(
        self,
        mac: str,
        device_id: str,
        start: datetime,
        end: datetime,
        *,
        gap_fill: bool = False,
    ) -> BackfillState:
        """Start a job for the hours of [start, end) and return its plan."""
        start = start.replace(minute=0, second=0, microsecond=0)
        end = end.replace(minute=0, second=0, microsecond=0)
        state = BackfillState(
            mac=mac,
            device_id=device_id,
            start=start,
            end=end,
            resume_end=end,
            gap_fill=gap_fill,
        )
        self._async_run(state)
        return state

    async def async_cancel(self, mac: str) -> None:
        """Stop a station's job at the user's request and wait until it has ended.

        The job will not resume. Its thread lets go within a fraction of a second
        unless an import is under way; waiting longer than CANCEL_WAIT is left to
        the job, which still ends by itself.
        """
        if (cancel := self._cancels.get(mac)) is None:
            return
        self._user_cancelled.add(mac)
        cancel.set()
        await asyncio.wait([self._tasks[mac]], timeout=CANCEL_WAIT)

    @callback
    def async_stop(self) -> None:
        """Stop every job for now (unload or shutdown); they resume later."""
        for cancel in self._cancels.values():
            cancel.set()
        self._store.async_delay_save(self._data, SAVE_DELAY)

    @callback
    def async_poll_succeeded(self) -> None:
        """Note a successful poll; fill the gap if the last one is long ago."""
        now = dt_util.utcnow()
        last, self._last_poll = self._last_poll, now
        # Kept on disk every quarter hour and at a clean stop: after a crash, an
        # older time only makes the next gap fill a little longer.
        if self._last_poll_saved is None or now - self._last_poll_saved > POLL_SAVE:
            self._last_poll_saved = now
            self._store.async_delay_save(self._data, SAVE_DELAY)
        if (
            last is None
            or now - last <= GAP_THRESHOLD
            or not self.entry.options.get(CONF_GAP_FILL, True)
        ):
            return
        coordinator = self.entry.runtime_data.coordinator
        for mac in coordinator.data:
            if not self.running(mac) and (device_id := self._device_id(mac)):
                LOGGER.debug("Filling a gap of %s in %s", now - last, self.entry.title)
                self.async_start(mac, device_id, last, now, gap_fill=True)

    def estimated_seconds(self, state: BackfillState) -> float:
        """Return how long the rest of a job takes at one request per second."""
        return (state.pages_total - state.pages_done) * MIN_SPACING

    @callback
    def _async_run(self, state: BackfillState) -> None:
        """Start the worker thread of a job."""
        cancel = threading.Event()
        self.states[state.mac] = replace(state)
        self._cancels[state.mac] = cancel
        self._async_checkpoint(state)
        self._tasks[state.mac] = self.hass.async_create_background_task(
            self._async_work(state, cancel), f"{DOMAIN} backfill {state.mac}"
        )

    async def _async_work(self, state: BackfillState, cancel: threading.Event) -> None:
        """Wait for a worker thread and announce how its job ended."""
        worker = BackfillWorker(
            self.hass, self.entry.runtime_data, state, cancel, self._report
        )
        error: str | None = None
        try:
            await self.hass.async_add_executor_job(worker.run)
        except BackfillCancelledError, QueueStoppedError:
            status = "cancelled"
        except Exception as err:  # noqa: BLE001
            # A job must always end with an event, whatever stopped it.
            LOGGER.debug("Backfill in %s failed", self.entry.title, exc_info=True)
            status, error = "failed", str(err) or type(err).__name__
        else:
            status = "completed"
        if status == "failed" or state.mac in self._user_cancelled:
            await self._async_join_sums(worker)
        self._async_finish(state, status, error)

    async def _async_join_sums(self, worker: BackfillWorker) -> None:
        """Join what a job that will not resume imported to the history before it."""
        try:
            await worker.async_join_sums()
        except Exception:  # noqa: BLE001
            # The job must still end with its event; the next backfill of these
            # hours joins them.
            LOGGER.debug(
                "Backfill in %s left its sums", self.entry.title, exc_info=True
            )

    @callback
    def _async_finish(
        self, state: BackfillState, status: str, error: str | None
    ) -> None:
        """Keep the checkpoint of a job stopped for now, and announce the end."""
        mac = state.mac
        del self.states[mac], self._cancels[mac], self._tasks[mac]
        if status == "cancelled" and mac not in self._user_cancelled:
            self._saved_jobs[mac] = state.as_dict()
        else:
            self._saved_jobs.pop(mac, None)
        self._user_cancelled.discard(mac)
        self.outcomes[mac] = BackfillOutcome(replace(state), status, dt_util.utcnow())
        self.hass.async_create_task(
            self._store.async_save(self._data()), f"{DOMAIN} save backfill"
        )
        async_dispatcher_send(self.hass, progress_signal(self.entry.entry_id, mac))
        event: dict[str, Any] = {
            "device_id": state.device_id,
            "mac": mac,
            "status": status,
            "records": state.records,
            "hours": state.hours,
            "start": state.start.isoformat(),
            "end": state.end.isoformat(),
            "gap_fill": state.gap_fill,
            "skipped": state.skipped,
        }
        if error is not None:
            event["error"] = error
        LOGGER.info(
            "Backfill in %s %s: %s hours from %s records",
            self.entry.title,
            status,
            state.hours,
            state.records,
        )
        self.hass.bus.async_fire(EVENT_BACKFILL_FINISHED, event)

    def _report(self, state: BackfillState) -> None:
        """Take a checkpoint from the worker thread onto the loop."""
        self.hass.loop.call_soon_threadsafe(self._async_checkpoint, state)

    @callback
    def _async_checkpoint(self, state: BackfillState) -> None:
        """Save a job's progress and show it."""
        if state.mac not in self.states:
            return
        self.states[state.mac] = replace(state)
        self._saved_jobs[state.mac] = state.as_dict()
        self._store.async_delay_save(self._data, SAVE_DELAY)
        async_dispatcher_send(
            self.hass, progress_signal(self.entry.entry_id, state.mac)
        )

    def _data(self) -> dict[str, Any]:
        """Return what the store keeps."""
        last_poll = self._last_poll.isoformat() if self._last_poll else None
        return {"jobs": self._saved_jobs, "last_poll": last_poll}

    def _device_id(self, mac: str) -> str | None:
        """Return the device id of a station."""
        device = dr.async_get(self.hass).async_get_device_by_identifier(
            (DOMAIN, mac), self.entry.entry_id
        )
        return device.id if device else None
