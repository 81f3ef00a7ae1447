"""The backfill worker: one station's history into long-term statistics.

A worker runs in an executor thread. It reaches the Ambient API only through the
request queue's thread-safe bridge, so it shares the account's rate limit with
everything else, and it reaches Home Assistant only by handing coroutines to the
event loop: reads of the recorder go through the recorder's executor, imports
through the recorder's own statistics API, in one batch per page. Every wait has
a timeout, so a worker never hangs on a loop that stopped.

Statistics go under each sensor's own statistic_id. The recorder compiles those
too, so a worker writes only hours that the recorder will never compile (before
the entity existed) or has compiled already (which the import overwrites, as it
must after hours compiled from stale states while Home Assistant was down); never
the current hour nor one whose compile is pending. Counters' sums are laid
backwards, page by page, from the recorder's own sum at the first hour left to
it; when the job completes, one adjustment joins them to the row before the
range. Then every imported hour's change is that hour's rain, the first one
included, the recorder's rows keep their change, and its next compile continues
without a step (a sensor it has not compiled yet gets a 5-minute row to go on
from). A job that fails or is cancelled for good is joined the same way
over the hours it imported; one stopped to resume later is joined when it ends.
"""

import asyncio
from collections.abc import Callable, Collection, Coroutine
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
import math
import threading
from typing import TYPE_CHECKING, Any

from homeassistant.components.recorder import get_instance
from homeassistant.components.recorder.db_schema import StatisticsShortTerm
from homeassistant.components.recorder.models import (
    StatisticData,
    StatisticMeanType,
    StatisticMetaData,
)
from homeassistant.components.recorder.statistics import (
    STATISTIC_UNIT_TO_UNIT_CONVERTER,
    async_import_statistics,
    get_last_short_term_statistics,
    get_last_statistics,
    get_metadata,
    statistics_during_period,
)
from homeassistant.components.sensor import UNIT_CONVERTERS, SensorStateClass
from homeassistant.const import ATTR_UNIT_OF_MEASUREMENT, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.util import dt as dt_util

from .api import (
    HISTORY_PAGE_LIMIT,
    AmbientRateLimitError,
    AmbientResponseError,
    AmbientServerError,
    Record,
)
from .const import DOMAIN
from .request_queue import Priority, QueueCancelledError, QueueTimeoutError
from .sensor import SENSORS, AmbientSensorEntityDescription
from .statistics import (
    AngleHour,
    CounterHour,
    FieldKind,
    Hour,
    HourlyStatistics,
    MeasurementHour,
)

if TYPE_CHECKING:
    from .coordinator import AmbientRuntimeData

# How long the thread waits for one answer from the loop or the queue: far more
# than a page takes, even behind a rate-limit backoff.
BRIDGE_TIMEOUT = 300.0
# Pauses before retrying a page the API failed to serve.
PAGE_RETRY_DELAYS = (5.0, 15.0, 45.0, 120.0)
EMPTY_PAGE_PROBES = 7
PAGES_BEFORE_START = 2
STATISTICS_LOOKBACK_DAYS = 3650
SUM_TOLERANCE = 1e-9
HOUR = timedelta(hours=1)
SHORT_TERM = timedelta(minutes=5)
# The recorder queues the compile of a 5-minute period, and of the hour it
# closes, 10 s after it ends; a row written into that period must come after.
COMPILE_QUEUED = timedelta(seconds=30)
# Failures worth another try of the same page.
_RETRIED = (
    AmbientServerError,
    AmbientResponseError,
    AmbientRateLimitError,
    QueueTimeoutError,
)

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
class BackfillState:
    """Where a job stands; saved after every page, so a restart resumes it."""

    mac: str
    device_id: str
    start: datetime
    end: datetime
    # Hours at or after `resume_end` are done; `sums` are the counters' sums
    # there, where the hours still to import must end.
    resume_end: datetime
    sums: dict[str, float] | None = None
    # Counters: the start (epoch seconds) of the oldest hour imported so far.
    oldest: dict[str, float] = field(default_factory=dict)
    # Sensors left out: disabled ones, and fields whose sensor was deleted.
    skipped: list[str] = field(default_factory=list)
    pages_done: int = 0
    records: int = 0
    hours: int = 0
    gap_fill: bool = False

    @property
    def pages_total(self) -> int:
        """Return the pages the job needs: one per day of history."""
        days = (self.end - self.start) / timedelta(days=1)
        return max(self.pages_done, math.ceil(days) + 1)

    def as_dict(self) -> dict[str, Any]:
        """Return the state as JSON-ready data."""
        data = asdict(self)
        for key in ("start", "end", "resume_end"):
            data[key] = data[key].isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackfillState:
        """Return the state saved by `as_dict`."""
        times = {
            key: dt_util.parse_datetime(data[key], raise_on_error=True)
            for key in ("start", "end", "resume_end")
        }
        return cls(**(data | times))


@dataclass(kw_only=True)
class _Target:
    """Where one field's statistics go."""

    key: str
    kind: FieldKind
    metadata: StatisticMetaData
    convert: Any
    # Hours at or after this one are left to the recorder.
    limit: datetime
    # Counters: while importing, the sum before the hours imported so far.
    running_sum: float = 0.0
    oldest: datetime | None = None


class BackfillWorker:
    """Fetch, summarise and import one station's history; runs in a thread."""

    def __init__(
        self,
        hass: HomeAssistant,
        runtime: AmbientRuntimeData,
        state: BackfillState,
        cancel: threading.Event,
        report: Callable[[BackfillState], None],
    ) -> None:
        """Initialize the worker; `report` receives a copy after every page."""
        self.hass = hass
        self._client = runtime.client
        self._queue = runtime.queue
        self._coordinator = runtime.coordinator
        self.state = state
        self._cancel = cancel
        self._report = report
        self._targets: list[_Target] = []

    def run(self) -> None:
        """Page back from the checkpoint to the start, importing as hours finish."""
        state = self.state
        reported = self._coordinator.data[state.mac].last_data.keys()
        state.skipped = []
        targets = self._targets = self._bridge(
            _async_targets(self.hass, state, reported)
        )
        for target in targets:
            if (oldest := state.oldest.get(target.key)) is not None:
                target.oldest = dt_util.utc_from_timestamp(oldest)
        folder = HourlyStatistics(
            {t.key: t.kind for t in targets}, state.start, state.resume_end
        )
        start_ms = state.start.timestamp() * 1000
        cursor = state.resume_end
        probes = pages_before_start = 0
        records_before = state.records
        while True:
            page = self._fetch(cursor)
            state.pages_done += 1
            hours = folder.add(page)
            state.records = records_before + folder.taken
            self._import(targets, hours)
            if page:
                probes = 0
                oldest = folder.oldest_ms
                assert oldest is not None
                # Past the start, read on only while a counter (its sensor out
                # just then) still lacks the record its first change starts at.
                if oldest < start_ms and (
                    not folder.waiting or pages_before_start == PAGES_BEFORE_START
                ):
                    break
                pages_before_start += oldest < start_ms
                cursor = dt_util.utc_from_timestamp((oldest - 1) / 1000)
            else:
                # An empty page may be a long outage rather than the start of
                # the station's history: look a few days further back first.
                probes += 1
                cursor -= timedelta(days=1)
                if probes > EMPTY_PAGE_PROBES or cursor < state.start:
                    break
        hours = folder.finish()
        state.records = records_before + folder.taken
        self._import(targets, hours)
        self._wait_for_compiles(targets)
        self._bridge(_async_join_sums(self.hass, targets))

    async def async_join_sums(self) -> None:
        """Join the sums imported so far to the history before them; on the loop."""
        await _async_join_sums(self.hass, self._targets)

    def _fetch(self, cursor: datetime) -> list[Record]:
        """Return one page, retrying failures of the API with a growing pause."""
        for delay in PAGE_RETRY_DELAYS:
            try:
                return self._request(cursor)
            except _RETRIED:
                if self._cancel.wait(delay):
                    raise BackfillCancelledError from None
        return self._request(cursor)

    def _request(self, cursor: datetime) -> list[Record]:
        """Ask the queue for the page of records up to `cursor`."""
        if self._cancel.is_set():
            raise BackfillCancelledError
        try:
            page: list[Record] = self._queue.submit_threadsafe(
                self._client.device_history,
                self.state.mac,
                cursor,
                HISTORY_PAGE_LIMIT,
                timeout=BRIDGE_TIMEOUT,
                priority=Priority.BACKFILL,
                cancel=self._cancel,
            )
        except QueueCancelledError:
            raise BackfillCancelledError from None
        return page

    def _wait_for_compiles(self, targets: list[_Target]) -> None:
        """Wait, where a stop can reach it, until the join has nothing to wait for.

        The join may write a 5-minute row at the end of the hour before a
        counter's limit (see `_async_seed_short_term`); that hour's compile must
        be queued first. Only a job ending in the first seconds after an hour
        waits, for at most COMPILE_QUEUED.
        """
        limits = [t.limit for t in targets if t.oldest is not None]
        if not limits:
            return
        ready = max(limits) + COMPILE_QUEUED
        while (now := dt_util.utcnow()) < ready:
            if self._cancel.wait(min((ready - now).total_seconds(), 0.5)):
                raise BackfillCancelledError

    def _bridge[T](self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on Home Assistant's loop and wait for it, bounded."""
        future = asyncio.run_coroutine_threadsafe(coro, self.hass.loop)
        try:
            return future.result(BRIDGE_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise

    def _import(self, targets: list[_Target], hours: list[Hour]) -> None:
        """Hand finished hours to the recorder, then checkpoint past them."""
        if not hours:
            return
        imported: set[datetime] = set()
        batches: list[tuple[StatisticMetaData, list[StatisticData]]] = []
        # Building rows moves the counters' running sums; keep them to undo
        # that if the rows never reach the recorder.
        before = [(t.running_sum, t.oldest) for t in targets]
        for target in targets:
            rows = [
                row
                for hour in hours
                if hour.start < target.limit and (row := _row(target, hour)) is not None
            ]
            if rows:
                batches.append((target.metadata, rows))
                imported.update(row["start"] for row in rows)
        if batches:
            # One hand-over per page rather than one per statistic: each wakes
            # the loop and waits for it.
            try:
                self._bridge(_async_import(self.hass, batches))
            except BaseException:
                for target, (running_sum, oldest) in zip(targets, before, strict=True):
                    target.running_sum, target.oldest = running_sum, oldest
                raise
        self.state.hours += len(imported)
        self.state.resume_end = hours[-1].start
        counters = [t for t in targets if t.metadata["has_sum"]]
        self.state.sums = {t.key: t.running_sum for t in counters}
        self.state.oldest = {
            t.key: t.oldest.timestamp() for t in counters if t.oldest is not None
        }
        self._report(replace(self.state))


async def _async_targets(
    hass: HomeAssistant, state: BackfillState, reported: Collection[str]
) -> list[_Target]:
    """Find each sensor's statistic_id, unit and import limit; on the loop.

    A checkpoint's running sums replace the anchors read from the recorder when
    a job resumes. Disabled sensors, fields in `reported` whose sensor is gone,
    and sensors whose statistics are kept in a unit the station's values cannot
    be converted to, are left out and noted in the state's `skipped`.
    """
    mac, end, sums, skipped = state.mac, state.resume_end, state.sums, state.skipped
    # Let the recorder finish what it queued, such as compiling the hours it
    # missed while Home Assistant was down, before reading its state.
    recorder = get_instance(hass)
    await recorder.async_block_till_done()
    sensors = _sensors(hass, mac, reported, skipped)
    known = await recorder.async_add_executor_job(
        partial(
            get_metadata,
            hass,
            statistic_ids={entity.entity_id for _, _, entity in sensors},
        )
    )
    targets: list[_Target] = []
    for description, kind, entity in sensors:
        kept = known[entity.entity_id][1] if entity.entity_id in known else None
        target = await _async_target(
            hass, entity, description, kind, kept=kept, end=end
        )
        if target is None:
            skipped.append(entity.entity_id)
            continue
        if sums is not None and description.key in sums:
            target.running_sum = sums[description.key]
        targets.append(target)
    return targets


type _Sensor = tuple[AmbientSensorEntityDescription, FieldKind, er.RegistryEntry]


def _sensors(
    hass: HomeAssistant, mac: str, reported: Collection[str], skipped: list[str]
) -> list[_Sensor]:
    """Return a station's enabled sensors that have statistics; note the rest."""
    registry = er.async_get(hass)
    sensors: list[_Sensor] = []
    for description in SENSORS:
        if (kind := _KINDS.get(description.state_class)) is None:  # type: ignore[arg-type]
            continue
        unique_id = f"{mac}_{description.key}"
        entity_id = registry.async_get_entity_id(Platform.SENSOR, DOMAIN, unique_id)
        if entity_id is None:
            # The station reports the field but its sensor was deleted.
            if description.key in reported:
                skipped.append(description.key)
            continue
        if registry.entities[entity_id].disabled:
            skipped.append(entity_id)
            continue
        sensors.append((description, kind, registry.entities[entity_id]))
    return sensors


async def _async_target(
    hass: HomeAssistant,
    entity: er.RegistryEntry,
    description: AmbientSensorEntityDescription,
    kind: FieldKind,
    *,
    kept: StatisticMetaData | None,
    end: datetime,
) -> _Target | None:
    """Describe where one sensor's statistics go, or None if they cannot.

    As the recorder does, statistics stay in the unit they were first kept in
    (`kept`, when they exist), whatever unit the sensor shows now; new ones
    take the sensor's unit.
    """
    if kept is not None:
        unit = kept["unit_of_measurement"]
    elif (state := hass.states.get(entity.entity_id)) is not None:
        unit = state.attributes.get(ATTR_UNIT_OF_MEASUREMENT)
    else:
        unit = entity.unit_of_measurement
    native = description.native_unit_of_measurement
    converter = UNIT_CONVERTERS.get(description.device_class)
    convert = None
    if unit != native:
        if converter is None or unit not in converter.VALID_UNITS:
            # The recorder cannot compile these states into that unit either.
            return None
        convert = converter.converter_factory(native, unit)
    metadata = StatisticMetaData(
        has_sum=kind is FieldKind.COUNTER,
        mean_type=_MEAN_TYPES[kind],
        name=None,
        source="recorder",
        statistic_id=entity.entity_id,
        unit_class=_unit_class(description, unit),
        unit_of_measurement=unit,
    )
    limit, running_sum = await _async_limit(hass, entity, metadata, end)
    return _Target(
        key=description.key,
        kind=kind,
        metadata=metadata,
        convert=convert,
        limit=limit,
        running_sum=running_sum,
    )


async def _async_limit(
    hass: HomeAssistant,
    entity: er.RegistryEntry,
    metadata: StatisticMetaData,
    end: datetime,
) -> tuple[datetime, float]:
    """Return the first hour to leave alone and the recorder's sum before it."""
    hour_created = entity.created_at.replace(minute=0, second=0, microsecond=0)
    last = await get_instance(hass).async_add_executor_job(
        get_last_statistics, hass, 1, entity.entity_id, False, {"sum"}
    )
    rows = last.get(entity.entity_id, [])
    compiled_until = (
        dt_util.utc_from_timestamp(rows[0]["start"]) + HOUR if rows else hour_created
    )
    limit = min(max(hour_created, compiled_until), end)
    if not rows:
        return limit, 0.0
    if rows[0]["start"] < limit.timestamp():
        return limit, rows[0].get("sum") or 0.0
    # The range ends before the newest row: anchor on the row before it.
    return limit, await _async_sum_before(hass, metadata, limit)


async def _async_sum_before(
    hass: HomeAssistant, metadata: StatisticMetaData, moment: datetime
) -> float:
    """Return the sum of the newest hourly row before a moment, or 0.

    The sum is in the statistic's own unit, not the unit the sensor shows now.
    """
    statistic_id = metadata["statistic_id"]
    unit_class = metadata["unit_class"]
    units = (
        None if unit_class is None else {unit_class: metadata["unit_of_measurement"]}
    )
    rows = await get_instance(hass).async_add_executor_job(
        statistics_during_period,
        hass,
        moment - timedelta(days=STATISTICS_LOOKBACK_DAYS),
        moment,
        {statistic_id},
        "hour",
        units,
        {"sum"},
    )
    before = rows.get(statistic_id, [])
    return (before[-1].get("sum") or 0.0) if before else 0.0


async def _async_join_sums(hass: HomeAssistant, targets: list[_Target]) -> None:
    """Shift each counter's sums so its oldest imported hour follows the row before.

    Sums were laid backwards from the recorder's sum at the end of the range, so
    the oldest imported hour stands at an arbitrary level. Moving that hour and
    everything after it, the recorder's own rows included, by one amount joins
    the imported hours to the history before them without changing any hour's
    change; the recorder's adjustment moves its 5-minute sums too, so its next
    compile continues without a step.
    """
    recorder = get_instance(hass)
    await recorder.async_block_till_done()
    for target in targets:
        if target.oldest is None:
            continue
        statistic_id = target.metadata["statistic_id"]
        before = await _async_sum_before(hass, target.metadata, target.oldest)
        # Queued before the adjustment, so that it moves the seed too.
        await _async_seed_short_term(hass, target.metadata)
        if (adjustment := _join_adjustment(before, target.running_sum)) is not None:
            recorder.async_adjust_statistics(
                statistic_id,
                target.oldest,
                adjustment,
                target.metadata["unit_of_measurement"] or "",
            )
    await recorder.async_block_till_done()


async def _async_seed_short_term(
    hass: HomeAssistant, metadata: StatisticMetaData
) -> None:
    """Give the recorder's first compile of a counter a sum to continue from.

    The recorder continues a sensor's sum from its newest 5-minute row. A sensor
    backfilled before its first compile has none, and that compile would start
    again from zero: an hour showing the whole history's rain as negative. A
    5-minute row closing the newest hour, with that hour's state and sum, lets
    the recorder go on from there. The row lies in an hour the recorder has
    compiled, or queued the compile of, so it collides with nothing. The
    statistics module imports hourly rows only, so the row goes to the
    recorder's own import task, which takes the 5-minute table too.
    """
    recorder = get_instance(hass)
    statistic_id = metadata["statistic_id"]
    short_term = await recorder.async_add_executor_job(
        get_last_short_term_statistics, hass, 1, statistic_id, False, {"sum"}
    )
    if short_term.get(statistic_id):
        return
    hourly = await recorder.async_add_executor_job(
        get_last_statistics, hass, 1, statistic_id, False, {"state", "sum"}
    )
    if not (rows := hourly.get(statistic_id)):
        return
    newest = rows[0]
    if (state := newest.get("state")) is None or (total := newest.get("sum")) is None:
        return
    end = dt_util.utc_from_timestamp(newest["start"]) + HOUR
    # Only a join on the loop, of a job that will not resume, can get here
    # early; a worker waited in its thread.
    if (early := end + COMPILE_QUEUED - dt_util.utcnow()) > timedelta(0):
        await asyncio.sleep(early.total_seconds())
    seed = StatisticData(start=end - SHORT_TERM, state=state, sum=total)
    recorder.async_import_statistics(metadata, [seed], StatisticsShortTerm)


def _join_adjustment(before: float, running_sum: float) -> float | None:
    """Return what to add to the sums laid from `running_sum`, or None for nothing.

    Once added, the oldest imported hour must not stand even a rounding error
    below `before`, the row before it: a dry hour would show negative rain. A
    job run again lands where it did before, or a rounding error above it, and
    is left there.
    """
    adjustment = before - running_sum
    if -SUM_TOLERANCE <= adjustment <= 0:
        return None
    # A step no smaller than the last bit of any of the three: each one moves
    # the sum up, so this ends within a step or two.
    step = math.ulp(max(abs(before), abs(running_sum), abs(adjustment)))
    while running_sum + adjustment < before:
        adjustment += step
    return adjustment


async def _async_import(
    hass: HomeAssistant, batches: list[tuple[StatisticMetaData, list[StatisticData]]]
) -> None:
    """Queue a page's imports with the recorder, one per statistic; on the loop."""
    for metadata, rows in batches:
        async_import_statistics(hass, metadata, rows)


def _row(target: _Target, hour: Hour) -> StatisticData | None:
    """Return one statistics row for a target, or None without data."""
    convert = target.convert or float
    match hour.fields.get(target.key):
        case CounterHour(state=state, change=change):
            row = StatisticData(
                start=hour.start, state=convert(state), sum=target.running_sum
            )
            target.oldest = hour.start
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
