"""Collect what the demo shows at the end and format it for the terminal."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
import math
from typing import Any

from local_api import ServedRequest

HISTORY_PREFIX = "/v1/devices/"
PAGE_SIZE = 288


@dataclass(kw_only=True)
class BackfillResult:
    """One station's backfill, as its finished event and the clock saw it."""

    event: dict[str, Any]
    seconds: float

    @property
    def status(self) -> str:
        """Return completed, cancelled or failed."""
        return str(self.event.get("status"))

    @property
    def records(self) -> int:
        """Return how many records the backfill read."""
        return int(self.event.get("records") or 0)

    @property
    def pages_needed(self) -> int:
        """Return the fewest history requests that could carry these records."""
        return math.ceil(self.records / PAGE_SIZE)


@dataclass(kw_only=True)
class StatisticSummary:
    """Hourly rows the recorder holds for one statistic over the backfilled range."""

    statistic_id: str
    unit: str | None
    rows: int
    low: float | None
    high: float | None
    label: str


@dataclass(kw_only=True)
class TrafficSummary:
    """Requests the local API answered, overall and during the backfill."""

    total: int
    rate_limited: int
    history_during_backfill: int
    devices_during_backfill: int
    statuses_during_backfill: dict[int, int] = field(default_factory=dict)


def traffic(log: Sequence[ServedRequest], start: float, end: float) -> TrafficSummary:
    """Count requests in the log, and those that arrived between start and end."""
    during = [served for served in log if start <= served.monotonic <= end]
    statuses: dict[int, int] = {}
    for served in during:
        statuses[served.status] = statuses.get(served.status, 0) + 1
    return TrafficSummary(
        total=len(log),
        rate_limited=sum(1 for served in log if served.status == 429),
        history_during_backfill=sum(
            1 for served in during if served.path.startswith(HISTORY_PREFIX)
        ),
        devices_during_backfill=sum(
            1 for served in during if not served.path.startswith(HISTORY_PREFIX)
        ),
        statuses_during_backfill=statuses,
    )


def pick_statistic(
    metadata: Iterable[dict[str, Any]], entity_ids: set[str], kind: str
) -> dict[str, Any] | None:
    """Pick the outdoor temperature or a rain statistic of the integration."""
    candidates = [
        item
        for item in metadata
        if item["statistic_id"] in entity_ids
        or item["statistic_id"].startswith("ambient_weather:")
    ]
    words = ("temperature", "tempf") if kind == "temperature" else ("rain",)
    avoid = ("indoor", "inside", "dew", "feels", "tempin")
    for item in sorted(candidates, key=lambda item: item["statistic_id"]):
        statistic_id = item["statistic_id"].lower()
        if any(word in statistic_id for word in words) and not any(
            word in statistic_id for word in avoid
        ):
            return item
    return None


def summarize_rows(
    statistic: dict[str, Any], rows: Sequence[dict[str, Any]]
) -> StatisticSummary:
    """Reduce hourly statistic rows to a count and a low/high pair."""
    has_sum = bool(statistic.get("has_sum"))
    if has_sum:
        # Differences of consecutive sums; the recorder's own "change" of the
        # first row compares against whatever sum came before the range.
        sums = [row["sum"] for row in rows if row.get("sum") is not None]
        values = [later - earlier for earlier, later in pairwise(sums)]
        label = "hourly increase"
    else:
        values = [row[key] for row in rows for key in ("min", "max") if row.get(key)]
        label = "hourly min/max"
    return StatisticSummary(
        statistic_id=statistic["statistic_id"],
        unit=statistic.get("statistics_unit_of_measurement")
        or statistic.get("display_unit_of_measurement"),
        rows=len(rows),
        low=min(values) if values else None,
        high=max(values) if values else None,
        label=label,
    )


def format_statistic(summary: StatisticSummary) -> str:
    """Return one line describing a statistic's rows."""
    unit = f" {summary.unit}" if summary.unit else ""
    if summary.low is None or summary.high is None:
        return f"{summary.statistic_id}: {summary.rows} hourly rows"
    return (
        f"{summary.statistic_id}: {summary.rows} hourly rows, {summary.label} "
        f"{summary.low:g} to {summary.high:g}{unit}"
    )


def format_backfill(result: BackfillResult, history_requests: int) -> list[str]:
    """Return lines about one station's backfill and the 1 request/s floor."""
    event = result.event
    floor = max(history_requests - 1, 0)
    lines = [
        (
            f"status {result.status}, {result.records} records, "
            f"{event.get('hours')} hours imported"
        ),
        f"range {event.get('start')} .. {event.get('end')}",
        (
            f"took {result.seconds:.1f} s; {result.pages_needed} pages needed "
            f"(records / {PAGE_SIZE}), {history_requests} history requests served"
        ),
        f"floor at one request per second: about {floor} s for those requests",
    ]
    if event.get("error"):
        lines.append(f"error: {event['error']}")
    return lines
