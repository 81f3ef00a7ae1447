"""Backfill: fill a station's long-term statistics with its past.

A job runs in an executor thread. It reaches the Ambient API only through the
request queue's thread-safe bridge, so it shares the account's rate limit with
everything else, and it reaches Home Assistant only by handing coroutines to the
event loop: reads of the recorder go through the recorder's executor, imports
through the recorder's own statistics API. Every wait on the loop has a timeout,
so a job can never hang on a loop that stopped.

Statistics go under each sensor's own statistic_id. The recorder compiles those
too, so a job writes only hours that the recorder will never compile (before the
entity existed) or has compiled already (which the import overwrites); never the
current hour nor one whose compile is pending. The sums of counters are laid so
that they end where the recorder's own sums stand, and the recorder's next
compile continues without a step.
"""

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
import threading
from typing import Any

from homeassistant.components.recorder import get_instance
from homeassistant.components.recorder.models import (
    StatisticData,
    StatisticMeanType,
    StatisticMetaData,
)
from homeassistant.components.recorder.statistics import (
    STATISTIC_UNIT_TO_UNIT_CONVERTER,
    async_import_statistics,
    get_last_statistics,
    statistics_during_period,
)
from homeassistant.components.sensor import UNIT_CONVERTERS, SensorStateClass
from homeassistant.const import ATTR_UNIT_OF_MEASUREMENT, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.util import dt as dt_util

from .api import HISTORY_PAGE_LIMIT
from .const import DOMAIN, EVENT_BACKFILL_FINISHED, LOGGER
from .coordinator import AmbientConfigEntry
from .request_queue import Priority
from .sensor import SENSORS, AmbientSensorEntityDescription
from .statistics import (
    AngleHour,
    CounterHour,
    FieldKind,
    Hour,
    HourlyStatistics,
    MeasurementHour,
)

# How long the thread waits for one answer from the loop or the queue; far more
# than a page takes, even behind a rate-limit backoff.
BRIDGE_TIMEOUT = 300.0
HOUR = timedelta(hours=1)

_KINDS = {
    SensorStateClass.MEASUREMENT: FieldKind.MEASUREMENT,
    SensorStateClass.MEASUREMENT_ANGLE: FieldKind.ANGLE,
    SensorStateClass.TOTAL_INCREASING: FieldKind.COUNTER,
}
_MEAN_TYPES = {
    FieldKind.MEASUREMENT: StatisticMeanType.ARITHMETIC,
    FieldKind.ANGLE: StatisticMeanType.CIRCULAR,
    FieldKind.COUNTER: StatisticMeanType.NONE,
}


class BackfillCancelledError(Exception):
    """The job was asked to stop."""


@dataclass(kw_only=True)
class _Target:
    """Where one field's statistics go."""

    key: str
    kind: FieldKind
    metadata: StatisticMetaData
    convert: Any
    # Hours at or after this one are left to the recorder.
    limit: datetime
    # Counters: the recorder's sum at `limit`, where imported sums must end.
    running_sum: float = 0.0


@dataclass(frozen=True, kw_only=True)
class BackfillResult:
    """What a finished job did."""

    records: int
    hours: int
    skipped: list[str]


class BackfillJob:
    """Backfill one station over one time range."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: AmbientConfigEntry,
        *,
        mac: str,
        device_id: str,
        start: datetime,
        end: datetime,
    ) -> None:
        """Initialize the job for the hours in [start, end)."""
        self.hass = hass
        self.entry = entry
        self.mac = mac
        self.device_id = device_id
        self.start = start.replace(minute=0, second=0, microsecond=0)
        self.end = end.replace(minute=0, second=0, microsecond=0)
        self._cancel = threading.Event()
        self._records = 0
        self._hours = 0

    def cancel(self) -> None:
        """Ask the job to stop after the page in flight."""
        self._cancel.set()

    async def async_run(self) -> None:
        """Run the job in an executor thread and announce how it ended."""
        event: dict[str, Any] = {
            "device_id": self.device_id,
            "mac": self.mac,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
        }
        try:
            result = await self.hass.async_add_executor_job(self._run)
        except BackfillCancelledError:
            event["status"] = "cancelled"
        except Exception as err:  # noqa: BLE001
            # A job must always end with an event, whatever stopped it.
            LOGGER.debug("Backfill of %s failed", self.mac, exc_info=True)
            event |= {"status": "failed", "error": str(err) or type(err).__name__}
        else:
            event["status"] = "completed"
            event["skipped"] = result.skipped
        finally:
            self.entry.runtime_data.backfills.pop(self.mac, None)
        event |= {"records": self._records, "hours": self._hours}
        self.hass.bus.async_fire(EVENT_BACKFILL_FINISHED, event)

    def _run(self) -> BackfillResult:
        """Fetch, summarise and import, page by page; runs in a worker thread."""
        targets, skipped = self._bridge(self._async_targets())
        folder = HourlyStatistics(
            {t.key: t.kind for t in targets}, self.start, self.end
        )
        runtime = self.entry.runtime_data
        cursor = self.end
        while True:
            if self._cancel.is_set():
                raise BackfillCancelledError
            page = runtime.queue.submit_threadsafe(
                runtime.client.device_history,
                self.mac,
                cursor,
                HISTORY_PAGE_LIMIT,
                timeout=BRIDGE_TIMEOUT,
                priority=Priority.BACKFILL,
            )
            self._records += len(page)
            self._import(targets, folder.add(page))
            oldest = folder.oldest_ms
            if not page or oldest is None or oldest < self.start.timestamp() * 1000:
                break
            cursor = dt_util.utc_from_timestamp((oldest - 1) / 1000)
        self._import(targets, folder.finish())
        self._bridge(get_instance(self.hass).async_block_till_done())
        return BackfillResult(records=self._records, hours=self._hours, skipped=skipped)

    def _bridge[T](self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on Home Assistant's loop and wait for it, bounded."""
        future = asyncio.run_coroutine_threadsafe(coro, self.hass.loop)
        try:
            return future.result(BRIDGE_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise

    def _import(self, targets: list[_Target], hours: list[Hour]) -> None:
        """Convert finished hours and hand them to the recorder, per statistic."""
        imported: set[datetime] = set()
        for target in targets:
            rows = [
                row
                for hour in hours
                if hour.start < target.limit and (row := _row(target, hour)) is not None
            ]
            if rows:
                imported.update(row["start"] for row in rows)
                self._bridge(_async_import(self.hass, target.metadata, rows))
        self._hours += len(imported)

    async def _async_targets(self) -> tuple[list[_Target], list[str]]:
        """Find each sensor's statistic_id, unit and import limit; on the loop."""
        registry = er.async_get(self.hass)
        targets: list[_Target] = []
        skipped: list[str] = []
        for description in SENSORS:
            if (kind := _KINDS.get(description.state_class)) is None:  # type: ignore[arg-type]
                continue
            unique_id = f"{self.mac}_{description.key}"
            entity_id = registry.async_get_entity_id(Platform.SENSOR, DOMAIN, unique_id)
            if entity_id is None:
                continue
            entity = registry.entities[entity_id]
            if entity.disabled:
                skipped.append(entity_id)
                continue
            targets.append(await self._async_target(entity, description, kind))
        return targets, skipped

    async def _async_target(
        self,
        entity: er.RegistryEntry,
        description: AmbientSensorEntityDescription,
        kind: FieldKind,
    ) -> _Target:
        """Describe where one sensor's statistics go."""
        state = self.hass.states.get(entity.entity_id)
        unit = (
            state.attributes.get(ATTR_UNIT_OF_MEASUREMENT)
            if state is not None
            else entity.unit_of_measurement
        )
        native = description.native_unit_of_measurement
        converter = UNIT_CONVERTERS.get(description.device_class)
        convert = (
            converter.converter_factory(native, unit)
            if converter is not None and unit != native
            else None
        )
        metadata = StatisticMetaData(
            has_sum=kind is FieldKind.COUNTER,
            mean_type=_MEAN_TYPES[kind],
            name=None,
            source="recorder",
            statistic_id=entity.entity_id,
            unit_class=_unit_class(description, unit),
            unit_of_measurement=unit,
        )
        limit, running_sum = await self._async_limit(entity)
        return _Target(
            key=description.key,
            kind=kind,
            metadata=metadata,
            convert=convert,
            limit=min(limit, self.end),
            running_sum=running_sum,
        )

    async def _async_limit(self, entity: er.RegistryEntry) -> tuple[datetime, float]:
        """Return the first hour left to the recorder and its sum before it."""
        hour_created = entity.created_at.replace(minute=0, second=0, microsecond=0)
        instance = get_instance(self.hass)
        last = await instance.async_add_executor_job(
            get_last_statistics, self.hass, 1, entity.entity_id, False, {"sum"}
        )
        rows = last.get(entity.entity_id, [])
        if not rows:
            return hour_created, 0.0
        compiled_until = dt_util.utc_from_timestamp(rows[0]["start"]) + HOUR
        limit = max(hour_created, compiled_until)
        if rows[0]["start"] >= min(limit, self.end).timestamp():
            # The window lies before the newest row: anchor on the row before it.
            before = await instance.async_add_executor_job(
                statistics_during_period,
                self.hass,
                self.start,
                min(limit, self.end),
                {entity.entity_id},
                "hour",
                None,
                {"sum"},
            )
            rows = before.get(entity.entity_id, [])[-1:]
        return limit, (rows[0].get("sum") or 0.0) if rows else 0.0


async def _async_import(
    hass: HomeAssistant, metadata: StatisticMetaData, rows: list[StatisticData]
) -> None:
    """Queue an import with the recorder; on the loop."""
    async_import_statistics(hass, metadata, rows)


def _row(target: _Target, hour: Hour) -> StatisticData | None:
    """Return one statistics row for a target, or None without data."""
    convert = target.convert or float
    match hour.fields.get(target.key):
        case CounterHour(state=state, change=change):
            row = StatisticData(
                start=hour.start, state=convert(state), sum=target.running_sum
            )
            # Hours come newest first: before this hour the sum was lower by its
            # change.
            target.running_sum -= convert(change) - convert(0.0)
            return row
        case AngleHour(mean=mean, mean_weight=weight):
            return StatisticData(start=hour.start, mean=mean, mean_weight=weight)
        case MeasurementHour(mean=mean, min=low, max=high):
            return StatisticData(
                start=hour.start,
                mean=convert(mean),
                min=convert(low),
                max=convert(high),
            )
    return None


def _unit_class(
    description: AmbientSensorEntityDescription, unit: str | None
) -> str | None:
    """Return the unit class the recorder derives for a sensor and unit."""
    converter = UNIT_CONVERTERS.get(description.device_class)
    if converter is not None and unit in converter.VALID_UNITS:
        return converter.UNIT_CLASS
    if (converter := STATISTIC_UNIT_TO_UNIT_CONVERTER.get(unit)) is not None:
        return converter.UNIT_CLASS
    return None
