"""Properties of the request queue's scheduling, on a virtual clock.

Hypothesis plays random scenarios: callers arriving from loop tasks and from
threads at random instants, with random priorities, on several API keys that
share application keys; an API that answers, fails, or refuses with 429 at
random and takes its time doing so; callers that give up; queues that stop and
start again. Whatever happens, the sends obey both rate limits, no caller gets the
answer to another request, and every caller is answered exactly once.
"""

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings, strategies as st
import pytest

from custom_components.ambient_weather.api import (
    AmbientRateLimitError,
    AmbientServerError,
)
from custom_components.ambient_weather.request_queue import (
    APPLICATION_KEY_RATE,
    MAX_RATE_LIMIT_RETRIES,
    MIN_SPACING,
    ApiCall,
    ApplicationKeyBudget,
    Priority,
    QueueStoppedError,
    RequestQueue,
)

from .virtual_time import VirtualTimeLoop

API_KEYS = 4
THREADS = 3
PAGES = 4
# Which application key each API key belongs to: all four share one (and then
# want more than its three requests a second), or they split two ways.
APPLICATIONS = [(0, 0, 0, 0), (0, 0, 0, 1), (0, 1, 0, 1)]
# Room for the float arithmetic between two readings of the virtual clock.
EPSILON = 1e-9
# Virtual seconds after which a caller still waiting counts as hung.
HORIZON = 7 * 86_400.0
# Real seconds a thread waits for the loop; only a hang ever uses them up.
THREAD_TIMEOUT = 10.0

# Every scenario runs threads, so shrinking a failure replays thousands of them
# and can outlast the suite's timeout: a failure is reported as found. To shrink
# one while debugging, add Phase.shrink.
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


class Outcome(Enum):
    """How the fake API answers one call."""

    OK = "ok"
    SERVER_ERROR = "server error"
    RATE_LIMITED = "429"
    UNEXPECTED = "unexpected exception"


@dataclass(frozen=True)
class Answer:
    """What one call of the fake API returns, and how long it takes."""

    outcome: Outcome
    duration: float


@dataclass(frozen=True)
class Arrival:
    """A caller that submits one request at a virtual instant.

    `page` None stands for `devices()`, a number for `history(page)`. A caller on
    a thread (`thread` set) waits until answered; a caller on a loop task gives up
    at `cancel_at`. Giving up at the instant the queues stop happens just after
    they stop, as Home Assistant cancels its tasks after its stop event.
    """

    at: float
    key: int
    page: int | None
    priority: Priority
    thread: int | None
    cancel_at: float | None


@dataclass(frozen=True)
class Scenario:
    """Everything that happens in one run."""

    applications: tuple[int, ...]
    arrivals: tuple[Arrival, ...]
    answers: dict[tuple[int, int | None], tuple[Answer, ...]]
    stop_at: float | None
    restart_at: float | None


@dataclass(eq=False)
class Call:
    """One call the fake API received; also the result it returns."""

    key: int
    page: int | None
    started: float
    ended: float | None = None


class ScriptedServerError(AmbientServerError):
    """A server error that remembers the call that raised it."""

    def __init__(self, call: Call) -> None:
        """Initialize the error."""
        super().__init__("Scripted server error")
        self.call = call


class ScriptedRateLimitError(AmbientRateLimitError):
    """A 429 that remembers the call that raised it."""

    def __init__(self, call: Call) -> None:
        """Initialize the error."""
        super().__init__("Scripted 429")
        self.call = call


class ScriptedUnexpectedError(RuntimeError):
    """An error no client should raise, remembering the call that raised it."""

    def __init__(self, call: Call) -> None:
        """Initialize the error."""
        super().__init__("Scripted unexpected error")
        self.call = call


_ERRORS: dict[Outcome, Callable[[Call], Exception]] = {
    Outcome.SERVER_ERROR: ScriptedServerError,
    Outcome.RATE_LIMITED: ScriptedRateLimitError,
    Outcome.UNEXPECTED: ScriptedUnexpectedError,
}
_DEFAULT_ANSWER = Answer(Outcome.OK, 0.1)
CANCELLED = "cancelled"


class FakeStation:
    """The client of one API key: records every call and answers as scripted."""

    def __init__(
        self,
        key: int,
        answers: dict[tuple[int, int | None], tuple[Answer, ...]],
    ) -> None:
        """Initialize the client of API key number `key`."""
        self.key = key
        self.calls: list[Call] = []
        self._answers = answers
        self._made: defaultdict[int | None, int] = defaultdict(int)

    async def devices(self) -> Call:
        """Answer a call for the account's stations."""
        return await self._answer(None)

    async def history(self, page: int) -> Call:
        """Answer a call for one page of history."""
        return await self._answer(page)

    def call_for(self, page: int | None) -> tuple[ApiCall, tuple[Any, ...]]:
        """Return the call and arguments that ask for `page`."""
        return (self.devices, ()) if page is None else (self.history, (page,))

    async def _answer(self, page: int | None) -> Call:
        """Record a call, take the scripted time, and answer as scripted."""
        loop = asyncio.get_running_loop()
        script = self._answers.get((self.key, page), ())
        made = self._made[page]
        self._made[page] += 1
        answer = script[made] if made < len(script) else _DEFAULT_ANSWER
        call = Call(self.key, page, started=loop.time())
        self.calls.append(call)
        try:
            await asyncio.sleep(answer.duration)
        finally:
            call.ended = loop.time()
        if (error := _ERRORS.get(answer.outcome)) is not None:
            raise error(call)
        return call


class ClockedQueue(RequestQueue):
    """A request queue that lets the virtual clock run while a thread waits on it."""

    async def submit(
        self, call: ApiCall, *args: Any, priority: Priority = Priority.POLL
    ) -> Any:
        """Queue a request; a thread that sent it no longer holds the clock."""
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        with loop.thread_waits():
            return await super().submit(call, *args, priority=priority)


@dataclass(eq=False)
class Waiter:
    """A caller and what it got back."""

    arrival: Arrival
    submitted: float | None = None
    outcomes: list[object] = field(default_factory=list)


class Run:
    """One scenario played on a virtual clock."""

    def __init__(self, scenario: Scenario, loop: VirtualTimeLoop) -> None:
        """Prepare the stations and the callers; queues start when play starts."""
        self.scenario = scenario
        self.loop = loop
        self.stations = [FakeStation(key, scenario.answers) for key in range(API_KEYS)]
        self.queues: list[ClockedQueue] = []
        self.waiters = [Waiter(arrival) for arrival in scenario.arrivals]
        self.tasks: dict[Waiter, asyncio.Task[None]] = {}
        self.hung: list[Waiter] = []
        self.leftovers: list[dict[str, int]] = []
        self.loop_errors: list[dict[str, Any]] = []

    @property
    def stopped(self) -> bool:
        """Return True if the scenario stops the queues before the end."""
        return self.scenario.stop_at is not None

    def sends_by_key(self) -> list[list[float]]:
        """Return when each API key's calls were sent."""
        return [[call.started for call in s.calls] for s in self.stations]

    def sends_by_application(self) -> list[list[float]]:
        """Return when the calls of each application key were sent, in order."""
        sends: defaultdict[int, list[float]] = defaultdict(list)
        for key, times in enumerate(self.sends_by_key()):
            sends[self.scenario.applications[key]].extend(times)
        return [sorted(times) for times in sends.values()]

    async def play(self) -> None:
        """Play the scenario until every caller is answered, then stop."""
        applications = self.scenario.applications
        budgets = [ApplicationKeyBudget() for _ in range(max(applications) + 1)]
        self.queues = [
            ClockedQueue(f"key {key}", budgets[application])
            for key, application in enumerate(applications)
        ]
        for queue in self.queues:
            queue.start()

        by_thread: defaultdict[int, list[Waiter]] = defaultdict(list)
        for waiter in self.waiters:
            if waiter.arrival.thread is None:
                self.tasks[waiter] = self._start_task(waiter)
            else:
                by_thread[waiter.arrival.thread].append(waiter)
        started: list[asyncio.Future[None]] = [
            self.loop.start_thread(partial(self._call_from_thread, waiters))
            for waiters in by_thread.values()
        ]
        started.extend(self.tasks.values())
        if self.stopped:
            started.append(asyncio.create_task(self._stop_and_restart()))

        pending: set[asyncio.Future[None]] = set()
        if started:
            _, pending = await asyncio.wait(started, timeout=HORIZON)
        self.hung = [w for w in self.waiters if not w.outcomes]
        self.leftovers = [queue.depth() for queue in self.queues if queue.running]

        # Release whatever hung, so that the run ends and the checks can tell.
        for queue in self.queues:
            await queue.async_stop()
        for future in pending:
            future.cancel()
        if pending:
            await asyncio.wait(pending, timeout=HORIZON)

    def _start_task(self, waiter: Waiter) -> asyncio.Task[None]:
        """Start the loop task of a caller, and its giving up if it does."""
        task = asyncio.create_task(self._call_from_task(waiter))
        cancel_at = waiter.arrival.cancel_at
        if cancel_at is not None and cancel_at != self.scenario.stop_at:
            self.loop.call_at(cancel_at, task.cancel)
        return task

    async def _call_from_task(self, waiter: Waiter) -> None:
        """Submit a request from a loop task at its instant."""
        arrival = waiter.arrival
        queue = self.queues[arrival.key]
        call, args = self.stations[arrival.key].call_for(arrival.page)
        try:
            await asyncio.sleep(arrival.at - self.loop.time())
            waiter.submitted = self.loop.time()
            result = await queue.submit(call, *args, priority=arrival.priority)
        except asyncio.CancelledError:
            waiter.outcomes.append(CANCELLED)
            raise
        except Exception as err:  # noqa: BLE001
            waiter.outcomes.append(err)
        else:
            waiter.outcomes.append(result)

    def _call_from_thread(self, waiters: list[Waiter]) -> None:
        """Submit a thread's requests in turn, each at its instant or later."""
        for waiter in sorted(waiters, key=lambda w: w.arrival.at):
            arrival = waiter.arrival
            queue = self.queues[arrival.key]
            call, args = self.stations[arrival.key].call_for(arrival.page)
            try:
                self.loop.sleep_thread_until(arrival.at, THREAD_TIMEOUT)
                waiter.submitted = self.loop.time()
                result = queue.submit_threadsafe(
                    call, *args, timeout=THREAD_TIMEOUT, priority=arrival.priority
                )
            except Exception as err:  # noqa: BLE001
                waiter.outcomes.append(err)
            else:
                waiter.outcomes.append(result)

    async def _stop_and_restart(self) -> None:
        """Stop each queue and cancel its callers that give up then; maybe restart."""
        stop_at = self.scenario.stop_at
        assert stop_at is not None
        await asyncio.sleep(stop_at - self.loop.time())
        for key, queue in enumerate(self.queues):
            await queue.async_stop()
            for waiter, task in self.tasks.items():
                if waiter.arrival.key == key and waiter.arrival.cancel_at == stop_at:
                    task.cancel()
        if (restart_at := self.scenario.restart_at) is not None:
            await asyncio.sleep(restart_at - self.loop.time())
            for queue in self.queues:
                queue.start()


def play(scenario: Scenario) -> Run:
    """Play a scenario on a fresh virtual clock and return what happened."""
    loop = VirtualTimeLoop()
    run = Run(scenario, loop)
    loop.set_exception_handler(lambda _, context: run.loop_errors.append(context))
    try:
        loop.run_until_complete(run.play())
    finally:
        for thread in loop.threads:
            thread.join(THREAD_TIMEOUT)
        loop.close()
    return run


# Quarter seconds over six seconds: callers crowd in faster than the queues send.
instants = st.integers(0, 24).map(lambda quarters: quarters / 4)


@st.composite
def arrivals(draw: st.DrawFn, stop_at: float | None) -> Arrival:
    """Draw one caller; loop callers may give up as the queues stop."""
    thread = draw(st.none() | st.integers(0, THREADS - 1))
    give_up = st.none() | instants
    if stop_at is not None:
        give_up |= st.just(stop_at)
    return Arrival(
        at=draw(instants),
        key=draw(st.integers(0, API_KEYS - 1)),
        page=draw(st.none() | st.integers(0, PAGES - 1)),
        priority=draw(st.sampled_from(Priority)),
        thread=thread,
        cancel_at=None if thread is not None else draw(give_up),
    )


answers = st.builds(
    Answer,
    outcome=st.sampled_from(Outcome),
    duration=st.sampled_from([0.0, 0.2, 1.5]),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Draw a whole scenario."""
    stops = draw(st.sampled_from([False, False, True]))
    stop_at = draw(instants) if stops else None
    restart_at = None
    if stop_at is not None and draw(st.booleans()):
        restart_at = stop_at + draw(st.sampled_from([0.0, 0.5, 3.0]))
    return Scenario(
        applications=draw(st.sampled_from(APPLICATIONS)),
        arrivals=tuple(draw(st.lists(arrivals(stop_at), min_size=16, max_size=48))),
        answers=draw(
            st.dictionaries(
                st.tuples(
                    st.integers(0, API_KEYS - 1),
                    st.none() | st.integers(0, PAGES - 1),
                ),
                st.lists(answers, max_size=4).map(tuple),
            )
        ),
        stop_at=stop_at,
        restart_at=restart_at,
    )


def the_call(outcome: object) -> Call | None:
    """Return the API call whose answer a caller got, if it got one."""
    if isinstance(outcome, Call):
        return outcome
    return getattr(outcome, "call", None)


@PROPERTY_SETTINGS
@given(scenarios())
def test_sends_of_one_api_key_are_spaced(scenario: Scenario) -> None:
    """Calls of one API key start at least MIN_SPACING apart, failed ones included."""
    run = play(scenario)

    for sends in run.sends_by_key():
        for earlier, later in pairwise(sends):
            assert later - earlier >= MIN_SPACING - EPSILON


@PROPERTY_SETTINGS
@given(scenarios())
def test_no_second_holds_more_than_three_sends_of_an_application_key(
    scenario: Scenario,
) -> None:
    """Across the API keys of one application key, no 1 s window holds four sends."""
    run = play(scenario)

    for sends in run.sends_by_application():
        for first, fourth in zip(sends, sends[APPLICATION_KEY_RATE:], strict=False):
            assert fourth - first >= 1.0 - EPSILON


@PROPERTY_SETTINGS
@given(scenarios())
def test_callers_only_get_answers_to_their_own_request(scenario: Scenario) -> None:
    """A result or an error reaches only callers of that call, and is never stale."""
    run = play(scenario)

    for waiter in run.waiters:
        for outcome in waiter.outcomes:
            if (call := the_call(outcome)) is None:
                continue
            assert (call.key, call.page) == (waiter.arrival.key, waiter.arrival.page)
            assert waiter.submitted is not None
            assert call.ended is not None
            assert call.ended >= waiter.submitted


@PROPERTY_SETTINGS
@given(scenarios())
def test_every_caller_is_answered_exactly_once(scenario: Scenario) -> None:
    """Each caller gets one result, API error, QueueStoppedError or cancellation."""
    run = play(scenario)

    assert not run.hung
    assert all(not thread.is_alive() for thread in run.loop.threads)
    assert not run.loop_errors
    for waiter in run.waiters:
        assert len(waiter.outcomes) == 1, waiter
        outcome = waiter.outcomes[0]
        if outcome == CANCELLED:
            assert waiter.arrival.cancel_at is not None
        elif isinstance(outcome, QueueStoppedError):
            assert run.stopped
        else:
            assert the_call(outcome) is not None, waiter


@PROPERTY_SETTINGS
@given(scenarios())
def test_queues_end_empty_and_count_every_send(scenario: Scenario) -> None:
    """Once every caller is answered nothing is left queued; `sent` counts calls."""
    run = play(scenario)

    assert all(not any(depth.values()) for depth in run.leftovers)
    for queue, station in zip(run.queues, run.stations, strict=True):
        assert queue.metrics.sent == len(station.calls)


def test_threads_act_at_their_virtual_instants() -> None:
    """The harness itself: threads submit at their instants; sends keep the spacing."""
    scenario = Scenario(
        applications=(0,) * API_KEYS,
        arrivals=tuple(
            Arrival(
                at=at,
                key=0,
                page=thread,
                priority=Priority.BACKFILL,
                thread=thread,
                cancel_at=None,
            )
            for thread, at in enumerate([0.0, 0.5])
        ),
        answers={},
        stop_at=None,
        restart_at=None,
    )

    run = play(scenario)

    assert [w.submitted for w in run.waiters] == [0.0, 0.5]
    assert [c.started for c in run.stations[0].calls] == pytest.approx(
        [0.0, MIN_SPACING]
    )
    assert [the_call(w.outcomes[0]) for w in run.waiters] == run.stations[0].calls


def test_a_lane_refused_for_a_day_keeps_backing_off_and_answering() -> None:
    """After more than a thousand 429s in a row the queue still answers everyone."""
    attempts = MAX_RATE_LIMIT_RETRIES + 1
    requests = 1100 // attempts + 1
    scenario = Scenario(
        applications=(0,) * API_KEYS,
        arrivals=tuple(
            Arrival(
                at=float(page),
                key=0,
                page=page,
                priority=Priority.BACKFILL,
                thread=None,
                cancel_at=None,
            )
            for page in range(requests)
        ),
        answers={
            (0, page): (Answer(Outcome.RATE_LIMITED, 0.0),) * attempts
            for page in range(requests)
        },
        stop_at=None,
        restart_at=None,
    )

    run = play(scenario)

    assert len(run.stations[0].calls) == requests * attempts
    assert not run.hung
    for waiter in run.waiters:
        assert len(waiter.outcomes) == 1
        assert isinstance(waiter.outcomes[0], ScriptedRateLimitError)


def test_callers_giving_up_as_the_queue_stops_end_cancelled() -> None:
    """Callers cancelled just after their queue stops end cancelled, queued or not."""
    scenario = Scenario(
        applications=(0,) * API_KEYS,
        arrivals=tuple(
            Arrival(
                at=0.0,
                key=0,
                page=page,
                priority=Priority.POLL,
                thread=None,
                cancel_at=5.0,
            )
            for page in range(PAGES)
        ),
        answers={(0, 0): (Answer(Outcome.OK, 10.0),)},
        stop_at=5.0,
        restart_at=None,
    )

    run = play(scenario)

    assert [w.outcomes for w in run.waiters] == [[CANCELLED]] * PAGES


def test_a_caller_giving_up_on_a_shared_call_leaves_nothing_to_log() -> None:
    """One of two merged callers gives up; the error reaches the other, unlogged."""
    scenario = Scenario(
        applications=(0,) * API_KEYS,
        arrivals=(
            Arrival(
                at=0.0,
                key=0,
                page=None,
                priority=Priority.POLL,
                thread=None,
                cancel_at=None,
            ),
            Arrival(
                at=0.0,
                key=0,
                page=None,
                priority=Priority.CONFIG_FLOW,
                thread=None,
                cancel_at=0.5,
            ),
        ),
        answers={(0, None): (Answer(Outcome.SERVER_ERROR, 1.0),)},
        stop_at=None,
        restart_at=None,
    )

    run = play(scenario)

    staying, leaving = run.waiters
    assert isinstance(staying.outcomes[0], ScriptedServerError)
    assert leaving.outcomes == [CANCELLED]
    assert run.loop_errors == []
