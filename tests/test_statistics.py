"""Tests for the hourly statistics, on station A's real records fed as backfill does.

Expected values come from a reference written apart from the module: records are
grouped by `dateutc // HOUR_MS`, means taken with `statistics.fmean`, circular
means from summed sines and cosines, and a counter's change is the sum of the
steps between consecutive records that carry it, each step credited to the later
record's hour. The places of the traps (resets, repeats, dropouts, the gap) are
found by searching the records, not written in.
"""

from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import pairwise
import math
from statistics import fmean

import pytest

from custom_components.ambient_weather.statistics import (
    AngleHour,
    CounterHour,
    FieldHour,
    FieldKind,
    Hour,
    HourlyStatistics,
    MeasurementHour,
)
from local_api.data import Record, load_records

HOUR_MS = 3_600_000
GRID_MS = 300_000
PAGE_SIZE = 288
RESET_RATIO = 0.9
# The console starts its rain day at 01:00 UTC-4 (its clock runs on UTC-5).
CONSOLE_DAY_HOUR = 5
# Each rain reading was rounded to 0.001 in from 0.1 mm, so it is off by up to this.
ROUNDING_IN = 0.002
# Floats summed in another order differ by far less than this.
EPSILON = 1e-9

MEASUREMENTS = (
    "tempf",
    "feelsLike",
    "dewPoint",
    "humidity",
    "windspeedmph",
    "windgustmph",
    "maxdailygust",
    "hourlyrainin",
    "uv",
    "solarradiation",
    "baromrelin",
    "baromabsin",
    "tempinf",
    "humidityin",
    "feelsLikein",
    "dewPointin",
)
COUNTERS = (
    "eventrainin",
    "dailyrainin",
    "weeklyrainin",
    "monthlyrainin",
    "totalrainin",
)
OUTDOOR = (
    "tempf",
    "feelsLike",
    "dewPoint",
    "humidity",
    "windspeedmph",
    "windgustmph",
    "maxdailygust",
    "winddir",
    "hourlyrainin",
    "uv",
    "solarradiation",
    *COUNTERS,
)
KINDS = {
    **dict.fromkeys(MEASUREMENTS, FieldKind.MEASUREMENT),
    "winddir": FieldKind.ANGLE,
    **dict.fromkeys(COUNTERS, FieldKind.COUNTER),
}


@pytest.fixture(scope="module")
def records() -> tuple[Record, ...]:
    """Return station A's records, oldest first."""
    return load_records()


@pytest.fixture(scope="module")
def one_shot(records: Sequence[Record]) -> dict[datetime, Hour]:
    """Return the hours of the whole recording folded in one call, newest first."""
    return _in_one_call(records, KINDS)


def _hour(record: Record) -> int:
    """Return the index of the UTC hour holding a record."""
    return record["dateutc"] // HOUR_MS


def _at(hour: int) -> datetime:
    """Return the start of an hour index as a UTC datetime."""
    return datetime.fromtimestamp(hour * HOUR_MS / 1000, UTC)


def _span(records: Sequence[Record]) -> tuple[datetime, datetime]:
    """Return the whole hours that hold the records."""
    return _at(_hour(records[0])), _at(_hour(records[-1]) + 1)


def _by_hour(records: Iterable[Record]) -> dict[int, list[Record]]:
    """Group records by the index of their UTC hour."""
    groups: dict[int, list[Record]] = defaultdict(list)
    for record in records:
        groups[_hour(record)].append(record)
    return groups


def _within(records: Iterable[Record], hour: int) -> list[Record]:
    """Return the records stamped at or after an hour's start and before its end."""
    start_ms = hour * HOUR_MS
    return [r for r in records if start_ms <= r["dateutc"] < start_ms + HOUR_MS]


def _summary(values: Sequence[float]) -> tuple[float, float, float]:
    """Return the mean, min and max of some readings."""
    return fmean(values), min(values), max(values)


def _measured(field: FieldHour) -> tuple[float, float, float]:
    """Return a measurement hour as (mean, min, max)."""
    assert isinstance(field, MeasurementHour)
    return field.mean, field.min, field.max


def _counter(hour: Hour, key: str) -> CounterHour:
    """Return a counter's summary in an hour."""
    field = hour.fields[key]
    assert isinstance(field, CounterHour)
    return field


def _step(older: float, newer: float) -> float:
    """Return the rain between two readings; a fall below 90 % restarts from zero."""
    return newer if newer < RESET_RATIO * older else max(newer - older, 0.0)


def _changes(records: Sequence[Record], key: str) -> dict[int, float]:
    """Sum each step between records carrying a counter into the later one's hour."""
    changes: dict[int, float] = defaultdict(float)
    carrying = [record for record in records if key in record]
    for older, newer in pairwise(carrying):
        changes[_hour(newer)] += _step(older[key], newer[key])
    return changes


def _circular_mean(angles: Sequence[float]) -> tuple[float, float]:
    """Return the mean direction and its weight, the hour shared equally."""
    sin_sum = sum(math.sin(math.radians(angle)) for angle in angles)
    cos_sum = sum(math.cos(math.radians(angle)) for angle in angles)
    resultant = math.hypot(sin_sum, cos_sum) / len(angles)
    return math.degrees(math.atan2(sin_sum, cos_sum)) % 360, 3600 * resultant


def _angle_apart(first: float, second: float) -> float:
    """Return how many degrees two directions are apart."""
    return abs((first - second + 180) % 360 - 180)


def _resets(records: Sequence[Record], key: str) -> list[tuple[Record, Record]]:
    """Return the consecutive records carrying a counter where it fell below 90 %."""
    carrying = [record for record in records if key in record]
    return [
        (older, newer)
        for older, newer in pairwise(carrying)
        if newer[key] < RESET_RATIO * older[key]
    ]


def _last_before(records: Sequence[Record], key: str, hour: int) -> Record:
    """Return the newest record before an hour that carries a field."""
    return next(
        record
        for record in reversed(records)
        if record["dateutc"] < hour * HOUR_MS and key in record
    )


def _runs_without(records: Sequence[Record], key: str) -> list[list[Record]]:
    """Return the runs of consecutive records that lack a field."""
    runs: list[list[Record]] = [[]]
    for record in records:
        if key not in record:
            runs[-1].append(record)
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if run]


def _console_days(records: Sequence[Record]) -> dict[int, list[Record]]:
    """Group records by the console's rain day, which starts at 05:00 UTC."""
    days: dict[int, list[Record]] = defaultdict(list)
    for record in records:
        days[(_hour(record) - CONSOLE_DAY_HOUR) // 24].append(record)
    return days


def _full_console_days(records: Sequence[Record]) -> dict[int, list[Record]]:
    """Return the console days with readings from their first to their last hour."""
    return {
        day: group
        for day, group in _console_days(records).items()
        if all("dailyrainin" in record for record in group)
        and _hour(group[0]) == day * 24 + CONSOLE_DAY_HOUR
        and _hour(group[-1]) == day * 24 + CONSOLE_DAY_HOUR + 23
    }


def _standout(
    records: Sequence[Record], candidates: Iterable[Record], key: str
) -> Record:
    """Return a candidate hotter or colder than every other reading within an hour."""
    groups = _by_hour(records)
    for candidate in candidates:
        hour = _hour(candidate)
        others = [
            record[key]
            for near in (hour - 1, hour, hour + 1)
            for record in groups.get(near, [])
            if record is not candidate and key in record
        ]
        if others and (candidate[key] > max(others) or candidate[key] < min(others)):
            return candidate
    raise AssertionError("no reading stands out from its neighbouring hours")


def _api_pages(records: Sequence[Record], end_ms: int) -> Iterator[list[Record]]:
    """Page back as backfill asks Ambient: 288 records at or before endDate.

    Pages are newest first. The next endDate is the oldest record's `dateutc`,
    which Ambient includes, so each page starts with the previous page's last
    record. A short page is the start of the history.
    """
    times = [record["dateutc"] for record in records]
    while True:
        stop = bisect_right(times, end_ms)
        page = list(reversed(records[max(0, stop - PAGE_SIZE) : stop]))
        if page:
            yield page
        if len(page) < PAGE_SIZE:
            return
        end_ms = page[-1]["dateutc"]


def _in_one_call(
    records: Sequence[Record], kinds: dict[str, FieldKind]
) -> dict[datetime, Hour]:
    """Fold all records in one add() and return the hours by start, newest first."""
    folder = HourlyStatistics(kinds, *_span(records))
    hours = folder.add(reversed(records)) + folder.finish()
    return {hour.start: hour for hour in hours}


def _fold(
    pages: Iterable[list[Record]], start: datetime, end: datetime
) -> tuple[list[list[Hour]], list[Hour]]:
    """Return what each page's add() returned, and what finish() returned."""
    folder = HourlyStatistics(KINDS, start, end)
    returned = [folder.add(page) for page in pages]
    return returned, folder.finish()


def test_every_hour_matches_the_reference(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """Each hour with records summarises exactly the fields its records carry."""
    groups = _by_hour(records)
    changes = {key: _changes(records, key) for key in COUNTERS}

    assert list(one_shot) == [_at(hour) for hour in sorted(groups, reverse=True)]
    for hour, group in groups.items():
        fields = one_shot[_at(hour)].fields
        assert set(fields) == {key for key in KINDS if any(key in r for r in group)}
        for key, field in fields.items():
            values = [record[key] for record in group if key in record]
            if key in COUNTERS:
                assert isinstance(field, CounterHour)
                assert field.state == values[-1]
                assert field.change == pytest.approx(changes[key][hour], abs=EPSILON)
            elif key == "winddir":
                assert isinstance(field, AngleHour)
                mean, weight = _circular_mean(values)
                assert _angle_apart(field.mean, mean) < EPSILON
                assert field.mean_weight == pytest.approx(weight)
            else:
                assert _measured(field) == pytest.approx(_summary(values))


@pytest.mark.parametrize(
    ("key", "extreme"),
    [("tempf", max), ("humidity", max), ("baromrelin", min)],
)
def test_the_hour_of_an_extreme_reading_has_its_mean_min_and_max(
    records: Sequence[Record],
    one_shot: dict[datetime, Hour],
    key: str,
    extreme: Callable[[Iterable[float]], float],
) -> None:
    """The hottest, most humid and lowest-pressure hours summarise their readings."""
    peak = extreme(record[key] for record in records if key in record)
    hour = _hour(next(record for record in records if record.get(key) == peak))
    readings = [record[key] for record in _within(records, hour)]

    mean, low, high = _measured(one_shot[_at(hour)].fields[key])

    assert (mean, low, high) == pytest.approx(_summary(readings))
    assert peak in (low, high)


def test_wind_across_north_gets_a_circular_mean(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """An hour of winds from both sides of north averages near north, not south."""
    west_of_north: dict[int, int] = Counter()
    east_of_north: dict[int, int] = Counter()
    for hour, group in _by_hour(records).items():
        angles = [record["winddir"] for record in group if "winddir" in record]
        if angles and all(angle > 315 or angle < 45 for angle in angles):
            west_of_north[hour] = sum(angle > 315 for angle in angles)
            east_of_north[hour] = sum(angle < 45 for angle in angles)
    hour = max(west_of_north, key=lambda h: min(west_of_north[h], east_of_north[h]))
    angles = [record["winddir"] for record in _within(records, hour)]
    mean, weight = _circular_mean(angles)

    field = one_shot[_at(hour)].fields["winddir"]

    assert min(west_of_north[hour], east_of_north[hour]) > 0
    assert isinstance(field, AngleHour)
    assert _angle_apart(field.mean, mean) < EPSILON
    assert _angle_apart(field.mean, 0) < 45
    assert field.mean_weight == pytest.approx(weight)


def test_a_record_on_the_hour_belongs_to_the_hour_starting_then(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """A reading stamped hh:00:00 counts in hour hh, not in the hour before."""
    on_the_hour = [r for r in records if r["dateutc"] % HOUR_MS == 0 and "tempf" in r]
    record = _standout(records, on_the_hour, "tempf")
    hour = _hour(record)

    assert record["tempf"] in _measured(one_shot[_at(hour)].fields["tempf"])
    assert record["tempf"] not in _measured(one_shot[_at(hour - 1)].fields["tempf"])

    # The daily reset at 05:00 belongs to hour 05: hour 04 keeps the day's total.
    for older, newer in _resets(records, "dailyrainin"):
        if newer["dateutc"] % HOUR_MS == 0:
            before = _counter(one_shot[_at(_hour(newer) - 1)], "dailyrainin")
            assert before.state == older["dailyrainin"] > 0


def test_records_off_the_grid_land_in_the_hour_of_their_timestamp(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """Irregularly spaced readings are summarised in the hour they are stamped in."""
    off_grid = [record for record in records if record["dateutc"] % GRID_MS]
    late = sorted(off_grid, key=lambda r: r["dateutc"] % HOUR_MS, reverse=True)
    record = _standout(records, (r for r in late if "tempf" in r), "tempf")
    busiest = Counter(_hour(r) for r in off_grid).most_common(1)[0][0]
    group = _within(records, busiest)
    spacings = {newer["dateutc"] - older["dateutc"] for older, newer in pairwise(group)}

    assert record["tempf"] in _measured(one_shot[_at(_hour(record))].fields["tempf"])
    assert record["tempf"] not in _measured(
        one_shot[_at(_hour(record) + 1)].fields["tempf"]
    )
    assert len(spacings) > 1
    for key in ("tempf", "humidity", "baromrelin"):
        readings = [r[key] for r in group]
        assert _measured(one_shot[_at(busiest)].fields[key]) == pytest.approx(
            _summary(readings)
        )


@pytest.mark.parametrize(
    ("key", "on_schedule"),
    [
        pytest.param(
            "dailyrainin",
            lambda moment: moment.hour == CONSOLE_DAY_HOUR,
            id="daily at 05:00 UTC",
        ),
        pytest.param(
            "weeklyrainin",
            lambda moment: moment.hour == CONSOLE_DAY_HOUR and moment.weekday() == 6,
            id="weekly on Sunday",
        ),
        pytest.param(
            "monthlyrainin",
            lambda moment: moment.hour == CONSOLE_DAY_HOUR and moment.day == 1,
            id="monthly on the 1st",
        ),
        pytest.param("eventrainin", lambda moment: True, id="event at any time"),
        # Rain always restarts at 0 here, which cannot show that the value after
        # a reset is counted. The daily gust maximum restarts at the new day's
        # first gust; one of its resets hides in a dropout and shows at 11:40.
        pytest.param(
            "maxdailygust", lambda moment: True, id="gust maximum from its first gust"
        ),
    ],
)
def test_a_reset_hour_counts_the_rise_before_and_after_the_reset(
    records: Sequence[Record], key: str, on_schedule: Callable[[datetime], bool]
) -> None:
    """A reset's hour adds the rise before the reset and the new count from zero."""
    hours = _in_one_call(records, {key: FieldKind.COUNTER})
    resets = _resets(records, key)

    assert resets
    for older, newer in resets:
        hour = _hour(newer)
        counter = _counter(hours[_at(hour)], key)
        before_reset = 0.0
        if _hour(older) == hour:
            before_reset = older[key] - _last_before(records, key, hour)[key]
        assert on_schedule(_at(hour))
        assert counter.change == pytest.approx(before_reset + counter.state)


def test_no_counter_ever_changes_by_a_negative_amount(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """Over the whole recording, with its 33 event resets, no hour loses rain."""
    assert len(_resets(records, "eventrainin")) == 33
    for hour in one_shot.values():
        for key in COUNTERS:
            if key in hour.fields:
                assert _counter(hour, key).change >= 0


def test_a_console_day_adds_up_to_its_daily_rain(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """The changes of a console day's 24 hours sum to the day's highest daily rain."""
    days = _full_console_days(records)
    rainiest = max(days, key=lambda day: max(r["dailyrainin"] for r in days[day]))

    assert max(r["dailyrainin"] for r in days[rainiest]) > 2
    for group in days.values():
        hours = {_at(_hour(record)) for record in group}
        total = sum(_counter(one_shot[hour], "dailyrainin").change for hour in hours)
        assert total == pytest.approx(max(r["dailyrainin"] for r in group))


def test_total_rain_agrees_with_the_resetting_counters(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """Monotonic total rain gives the rain the resetting counters add up to."""

    def rain(key: str, hours: Iterable[datetime]) -> float:
        """Return a counter's changes summed over some hours."""
        return sum(
            _counter(one_shot[h], key).change
            for h in hours
            if key in one_shot[h].fields
        )

    carrying = [record for record in records if "totalrainin" in record]
    risen = carrying[-1]["totalrainin"] - carrying[0]["totalrainin"]

    assert rain("totalrainin", one_shot) == pytest.approx(risen)
    for key in ("dailyrainin", "weeklyrainin", "monthlyrainin"):
        assert rain(key, one_shot) == pytest.approx(risen, abs=ROUNDING_IN)
    for group in _full_console_days(records).values():
        hours = {_at(_hour(record)) for record in group}
        assert rain("dailyrainin", hours) == pytest.approx(
            rain("totalrainin", hours), abs=ROUNDING_IN
        )


def test_stale_repeats_count_as_samples_and_add_no_rain(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """A record repeating the previous one's readings is one more sample, no rain.

    A repeat cannot be told from a steady reading (calm wind, no rain and a
    constant temperature also repeat), so the module keeps every record as a
    sample; a repeat only weights its hour's mean towards the repeated value.
    """

    def measured(record: Record) -> dict[str, float]:
        """Return a record's readings without its timestamps."""
        return {k: v for k, v in record.items() if k not in ("dateutc", "date")}

    stale = [
        newer
        for older, newer in pairwise(records)
        if measured(older) == measured(newer)
    ]
    repeated = {record["dateutc"] for record in stale}
    fresh = [record for record in records if record["dateutc"] not in repeated]
    without_repeats = _in_one_call(fresh, KINDS)
    moved = 0

    assert len(stale) == 40
    for repeat in stale:
        hour = _hour(repeat)
        group, unrepeated_group = _within(records, hour), _within(fresh, hour)
        for key in repeat.keys() & set(MEASUREMENTS):
            mean, low, high = _measured(one_shot[_at(hour)].fields[key])
            readings = [r[key] for r in group if key in r]
            unrepeated = [r[key] for r in unrepeated_group if key in r]
            assert (mean, low, high) == pytest.approx(_summary(readings))
            moved += mean != pytest.approx(fmean(unrepeated))
    assert moved
    for start, hour in without_repeats.items():
        for key in COUNTERS:
            if key in hour.fields:
                assert _counter(hour, key) == _counter(one_shot[start], key)


def test_hours_of_an_outdoor_dropout_carry_only_the_indoor_fields(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """While the outdoor sensor is silent, its hours have indoor readings only."""
    runs = _runs_without(records, "tempf")
    longest = max(runs, key=len)
    dark = [
        hour
        for hour, group in _by_hour(records).items()
        if all("tempf" not in record for record in group)
    ]

    assert (len(runs), sum(map(len, runs)), len(longest)) == (20, 258, 116)
    assert set(range(_hour(longest[0]) + 1, _hour(longest[-1]))) <= set(dark)
    for hour in dark:
        fields = one_shot[_at(hour)].fields
        readings = [record["tempinf"] for record in _within(records, hour)]
        assert not fields.keys() & set(OUTDOOR)
        assert _measured(fields["tempinf"]) == pytest.approx(_summary(readings))


def test_rain_of_a_dropout_counts_in_the_hour_the_field_returns(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """Rain that fell unseen shows in the hour total rain is read again."""
    key = "totalrainin"
    rained_unseen = False
    for run in _runs_without(records, key):
        before = next(r for r in reversed(records) if r["dateutc"] < run[0]["dateutc"])
        after = next(r for r in records if r["dateutc"] > run[-1]["dateutc"])
        first, last = _hour(before), _hour(after)
        returned = _counter(one_shot[_at(last)], key)
        since = _last_before(records, key, last)
        silent = [one_shot[_at(hour)] for hour in range(first + 1, last)]
        rain = sum(
            _counter(one_shot[_at(h)], key).change
            for h in range(first + 1, last + 1)
            if key in one_shot[_at(h)].fields
        )
        risen = returned.state - _counter(one_shot[_at(first)], key).state

        assert returned.change == pytest.approx(returned.state - since[key])
        assert all(key not in hour.fields for hour in silent)
        assert rain == pytest.approx(risen)
        rained_unseen |= after[key] > before[key]
    assert rained_unseen


def test_the_longest_gap_emits_no_hours_and_its_change_lands_after_it(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """Hours inside the 427-minute gap are absent; the rise across it comes after.

    No rain fell across the gap, so the daily gust maximum, which only grows
    within a console day, is folded as a counter to show where a change that
    spans the gap is credited.
    """
    before, after = max(
        pairwise(records), key=lambda p: p[1]["dateutc"] - p[0]["dateutc"]
    )
    first, last = _hour(before), _hour(after)
    gust = {"maxdailygust": FieldKind.COUNTER}
    gust_after = _counter(_in_one_call(records, gust)[_at(last)], "maxdailygust")

    assert after["dateutc"] - before["dateutc"] == 427 * 60_000
    assert not [start for start in one_shot if _at(first) < start < _at(last)]
    for hour in (first, last):
        group = _within(records, hour)
        fields = one_shot[_at(hour)].fields
        assert _measured(fields["tempf"]) == pytest.approx(
            _summary([r["tempf"] for r in group])
        )
        assert (
            _counter(one_shot[_at(hour)], "totalrainin").state
            == group[-1]["totalrainin"]
        )
    assert _counter(one_shot[_at(last)], "totalrainin").change == 0
    assert after["maxdailygust"] > before["maxdailygust"]
    assert gust_after.change == pytest.approx(gust_after.state - before["maxdailygust"])


def test_pages_give_the_same_hours_as_one_call(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """Paging with a repeated boundary record returns each hour once, newest first."""
    pages = list(_api_pages(records, records[-1]["dateutc"]))
    returned, finished = _fold(pages, *_span(records))
    hours = [hour for page in returned for hour in page] + finished
    starts = [hour.start for hour in hours]

    assert all(newer[-1] is older[0] for newer, older in pairwise(pages))
    assert starts == sorted(set(starts), reverse=True)
    assert hours == list(one_shot.values())


def test_each_hour_comes_out_with_the_first_page_that_settles_it(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """add() returns an hour, after the newer ones, once nothing older can change it.

    An hour is settled once a record older than its start has arrived, and, for
    each counter its records carry, an older record carrying that counter too.
    """
    pages = list(_api_pages(records, records[-1]["dateutc"]))
    returned, finished = _fold(pages, *_span(records))
    first_page: dict[int, int] = {}
    for index, page in enumerate(pages):
        for record in page:
            first_page.setdefault(record["dateutc"], index)
    times = {
        key: [r["dateutc"] for r in records if key is None or key in r]
        for key in (None, *COUNTERS)
    }

    def page_with_one_older(start_ms: int, key: str | None) -> int:
        """Return the first page holding a record older than a time (with a field)."""
        position = bisect_left(times[key], start_ms)
        return first_page[times[key][position - 1]] if position else len(pages)

    groups = _by_hour(records)
    released: dict[int, list[Hour]] = defaultdict(list)
    latest = 0
    for hour in sorted(groups, reverse=True):
        carried = {key for key in COUNTERS for r in groups[hour] if key in r}
        settled = max(page_with_one_older(hour * HOUR_MS, k) for k in (None, *carried))
        latest = max(latest, settled)
        released[latest].append(one_shot[_at(hour)])

    assert returned == [released[index] for index in range(len(pages))]
    assert finished == released[len(pages)]


def test_a_range_returns_its_hours_and_reads_one_record_before_it(
    records: Sequence[Record], one_shot: dict[datetime, Hour]
) -> None:
    """Only hours in [start, end) come back; the record before start gives a change.

    The range starts at the first hour whose rain began before it and ends at a
    record stamped on the hour, which the first page (endDate inclusive) holds.
    """
    key = "totalrainin"
    start = next(
        _hour(newer)
        for older, newer in pairwise(records)
        if _hour(older) < _hour(newer) and newer[key] > older[key]
    )
    end = next(
        _hour(r)
        for r in records
        if r["dateutc"] % HOUR_MS == 0 and _hour(r) >= start + 24
    )
    pages: list[list[Record]] = []
    for page in _api_pages(records, end * HOUR_MS):
        pages.append(page)
        if page[-1]["dateutc"] < start * HOUR_MS:
            break
    returned, finished = _fold(pages, _at(start), _at(end))
    hours = [hour for page in returned for hour in page] + finished

    assert pages[0][0]["dateutc"] == end * HOUR_MS
    assert hours == [h for h in one_shot.values() if _at(start) <= h.start < _at(end)]
    assert hours[-1].start == _at(start)
    assert _counter(hours[-1], key).change > 0
