"""Turn Ambient records into hourly statistics, newest hour first.

Backfill pages through history backwards, so records arrive newest first. This
module folds them into UTC hours and hands back each hour once nothing older can
change it, so a job can import page by page and never holds its whole range.

Hours are half-open UTC intervals: a record stamped exactly on the hour belongs to
the hour that starts then, as a state changing at that instant does in the
recorder. Measurements get the mean, min and max of their samples; angles a
circular mean, each sample weighted by its share of the hour. Counters get their
last value in the hour and the hour's change, computed from each record to the
next one that carries the field: a fall below 90 % of the previous value is a
reset (as the recorder detects for `total_increasing`), after which the new value
counts from zero; a smaller dip counts as no change. A record without the field
is skipped, so a sensor dropout neither resets a counter nor adds to it: the rain
of the gap is counted in the hour the field comes back.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from homeassistant.components.recorder.statistics import weighted_circular_mean

from .api import Record, to_number

HOUR_MS = 3_600_000
RESET_RATIO = 0.9


class FieldKind(Enum):
    """How a field is summarised per hour."""

    MEASUREMENT = "measurement"
    ANGLE = "angle"
    COUNTER = "counter"


@dataclass(slots=True)
class MeasurementHour:
    """A measurement's mean, min and max over one hour."""

    mean: float
    min: float
    max: float


@dataclass(slots=True)
class AngleHour:
    """An angle's circular mean over one hour, and its weight."""

    mean: float
    mean_weight: float


@dataclass(slots=True)
class CounterHour:
    """A counter's last value in one hour and how much it grew in that hour."""

    state: float
    change: float = 0.0


type FieldHour = MeasurementHour | AngleHour | CounterHour


@dataclass(slots=True)
class Hour:
    """The statistics of one UTC hour."""

    start: datetime
    fields: dict[str, FieldHour]


@dataclass(slots=True)
class _Bucket:
    """The samples of one hour while records are still arriving."""

    start_ms: int
    records: int = 0
    samples: dict[str, list[float]] = field(default_factory=dict)
    counters: dict[str, CounterHour] = field(default_factory=dict)


def hour_start(timestamp_ms: int) -> int:
    """Return the start of the UTC hour holding a timestamp, in ms."""
    return timestamp_ms - timestamp_ms % HOUR_MS


def counter_change(older: float, newer: float) -> float:
    """Return how much a counter grew from one record to the next."""
    if newer < RESET_RATIO * older:
        return newer
    return max(newer - older, 0.0)


class HourlyStatistics:
    """Fold records, newest first, into hours within [start, end)."""

    def __init__(
        self, kinds: Mapping[str, FieldKind], start: datetime, end: datetime
    ) -> None:
        """Initialize for the given fields and range (UTC hour boundaries)."""
        self._kinds = dict(kinds)
        self._start_ms = int(start.timestamp() * 1000)
        self._end_ms = int(end.timestamp() * 1000)
        self._buckets: dict[int, _Bucket] = {}
        self._last_ms: int | None = None
        # Records of the range in the hours handed back so far; the records of
        # hours still held count when their hour does.
        self.taken = 0
        # Per counter: the value of the newest record seen so far that carries
        # it, and the hour whose change is waiting for the record before it.
        self._newer: dict[str, tuple[float, int]] = {}

    @property
    def oldest_ms(self) -> int | None:
        """Return the time of the oldest record taken so far."""
        return self._last_ms

    @property
    def waiting(self) -> bool:
        """Return True while a counter still needs an older record."""
        return bool(self._newer)

    def add(self, records: Iterable[Record]) -> list[Hour]:
        """Take a page of records and return the hours it completed, newest first."""
        for record in sorted(records, key=lambda r: r["dateutc"], reverse=True):
            timestamp = record["dateutc"]
            if timestamp >= self._end_ms or (
                self._last_ms is not None and timestamp >= self._last_ms
            ):
                continue
            self._last_ms = timestamp
            self._take(record, timestamp)
        return self._pop_complete(final=False)

    def finish(self) -> list[Hour]:
        """Return every hour still held, newest first; nothing older will come."""
        self._newer.clear()
        return self._pop_complete(final=True)

    def _take(self, record: Record, timestamp: int) -> None:
        """Add one record's fields to its hour and to the counters' changes."""
        inside = timestamp >= self._start_ms
        bucket = self._bucket(hour_start(timestamp)) if inside else None
        if bucket is not None:
            bucket.records += 1
        for key, kind in self._kinds.items():
            if (value := to_number(record.get(key))) is None:
                continue
            if kind is FieldKind.COUNTER:
                self._take_counter(key, value, bucket)
            elif bucket is not None:
                bucket.samples.setdefault(key, []).append(value)

    def _take_counter(self, key: str, value: float, bucket: _Bucket | None) -> None:
        """Credit the change up to the newer record to that record's hour."""
        if (newer := self._newer.get(key)) is not None:
            newer_value, newer_hour = newer
            counters = self._buckets[newer_hour].counters
            counters[key].change += counter_change(value, newer_value)
        if bucket is None:
            self._newer.pop(key, None)
            return
        bucket.counters.setdefault(key, CounterHour(state=value))
        self._newer[key] = (value, bucket.start_ms)

    def _bucket(self, start_ms: int) -> _Bucket:
        """Return the bucket of an hour, creating it."""
        if (bucket := self._buckets.get(start_ms)) is None:
            bucket = self._buckets[start_ms] = _Bucket(start_ms)
        return bucket

    def _pop_complete(self, *, final: bool) -> list[Hour]:
        """Remove and return the newest hours that nothing can change any more."""
        waiting = {hour for _, hour in self._newer.values()}
        done: list[Hour] = []
        for start_ms in sorted(self._buckets, reverse=True):
            if not final and (
                self._last_ms is None
                or self._last_ms >= start_ms
                or start_ms in waiting
            ):
                break
            bucket = self._buckets.pop(start_ms)
            self.taken += bucket.records
            done.append(_summarise(bucket, self._kinds))
        return done


def _summarise(bucket: _Bucket, kinds: Mapping[str, FieldKind]) -> Hour:
    """Return the statistics of a complete bucket."""
    fields: dict[str, FieldHour] = dict(bucket.counters)
    for key, values in bucket.samples.items():
        if kinds[key] is FieldKind.ANGLE:
            share = 3600 / len(values)
            mean, weight = weighted_circular_mean((v, share) for v in values)
            fields[key] = AngleHour(mean=mean, mean_weight=weight)
        else:
            fields[key] = MeasurementHour(
                mean=sum(values) / len(values), min=min(values), max=max(values)
            )
    start = datetime.fromtimestamp(bucket.start_ms / 1000, UTC)
    return Hour(start, fields)
