"""Recorded station data, moved forward in time so that it looks current.

A recording is a list of real Ambient records. A `Timeline` places it on today's
calendar by adding a whole number of weeks to every `dateutc`. Whole weeks keep the
weekday and the UTC time of day of each record, so the console's daily and weekly
rain resets still fall where a real station would put them; monthly resets do not,
because months are not whole weeks.

The shift is the smallest whole number of weeks that puts the recording's newest
record at or after "now" when the timeline is built. Records later than the current
"now" are hidden, so the newest visible record is never more than a few minutes old
(gaps in the recording aside) and new records appear as the wall clock advances.
About a week later the recording runs out and the station looks offline.

Optionally the recording is repeated further back in time, each copy twelve weeks
older than the next, so that a long span (a year, say) has data. The recording lasts
a little over twelve weeks, so the copies overlap and the older copy gives way.
At each seam `totalrainin` falls back to its first value, as after a console reset.
"""

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
import functools
import gzip
import json
from pathlib import Path
from typing import Any

type Record = dict[str, Any]

DATA_DIR = Path(__file__).parent / "data"
STATION_A_FILE = DATA_DIR / "station_a.json.gz"

WEEK_MS = 7 * 24 * 3600 * 1000
# One repetition of the recording; 85 days of data fit twelve weeks with overlap.
LOOP_PERIOD_MS = 12 * WEEK_MS


@dataclass(frozen=True, kw_only=True)
class Station:
    """A station the local server offers: identity plus its recorded records."""

    mac_address: str
    name: str
    location: str
    tz: str
    records: Sequence[Record]


@functools.cache
def load_records(path: Path = STATION_A_FILE) -> tuple[Record, ...]:
    """Load a gzipped JSON array of records and return them oldest first."""
    with gzip.open(path, "rt", encoding="utf-8") as file:
        records: list[Record] = json.load(file)
    return tuple(sorted(records, key=lambda record: record["dateutc"]))


def station_a(mac_address: str = "00:0E:C6:20:0A:01") -> Station:
    """Return the recorded "Station A" (UTC-4 in summer, console on UTC-5)."""
    return Station(
        mac_address=mac_address,
        name="Station A",
        location="Recorded station",
        tz="America/New_York",
        records=load_records(),
    )


def iso_utc(dateutc: int) -> str:
    """Format epoch milliseconds the way Ambient writes `date`."""
    moment = datetime.fromtimestamp(dateutc / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dateutc % 1000:03d}Z"


class Timeline:
    """A station's records placed on the current calendar, queryable by time."""

    def __init__(
        self,
        records: Sequence[Record],
        *,
        now_ms: int,
        loop_span: timedelta | None = None,
    ) -> None:
        """Shift the records to end just after `now_ms`; repeat them over `loop_span`.

        With `loop_span`, records reach at least that far back from `now_ms`.
        """
        self._records = records
        newest = records[-1]["dateutc"]
        weeks = max(0, -(-(now_ms - newest) // WEEK_MS))
        shift = weeks * WEEK_MS

        # Each entry is (shifted dateutc, index into records), oldest first.
        entries: list[tuple[int, int]] = [
            (record["dateutc"] + shift, i) for i, record in enumerate(records)
        ]
        span_ms = int(loop_span.total_seconds() * 1000) if loop_span else 0
        while span_ms and now_ms - entries[0][0] < span_ms:
            shift -= LOOP_PERIOD_MS
            older = [
                (record["dateutc"] + shift, i)
                for i, record in enumerate(records)
                if record["dateutc"] + shift < entries[0][0]
            ]
            entries = older + entries

        self._times: list[int] = [time for time, _ in entries]
        self._sources: list[int] = [index for _, index in entries]

    @property
    def oldest_ms(self) -> int:
        """Return the shifted time of the oldest record."""
        return self._times[0]

    @property
    def newest_ms(self) -> int:
        """Return the shifted time of the newest record, visible or not."""
        return self._times[-1]

    def page(self, end_ms: int, limit: int) -> list[Record]:
        """Return up to `limit` records with dateutc <= `end_ms`, newest first."""
        stop = bisect_right(self._times, end_ms)
        start = max(0, stop - limit)
        return [self._record(i) for i in range(stop - 1, start - 1, -1)]

    def latest(self, now_ms: int) -> Record | None:
        """Return the newest record at or before `now_ms`, if any."""
        records = self.page(now_ms, 1)
        return records[0] if records else None

    def _record(self, position: int) -> Record:
        """Return a copy of one record with its shifted `dateutc` and `date`."""
        dateutc = self._times[position]
        record = dict(self._records[self._sources[position]])
        record["dateutc"] = dateutc
        record["date"] = iso_utc(dateutc)
        return record
