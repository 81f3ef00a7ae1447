"""Tests for the request queue, with real time on small spacings."""

import asyncio
from collections.abc import AsyncIterator, Callable, Hashable
import functools
import gc
import itertools
import threading
from typing import Any

import pytest

from custom_components.ambient_weather import request_queue
from custom_components.ambient_weather.api import (
    REQUEST_SENT,
    AmbientRateLimitError,
    AmbientServerError,
)
from custom_components.ambient_weather.request_queue import (
    ApplicationKeyBudget,
    Priority,
    QueueCancelledError,
    QueueStoppedError,
    QueueTimeoutError,
    RequestQueue,
)

SPACING = 0.05
# The fake API reads the clock a moment after the queue decided to send; on a
# loaded machine that moment has reached 2 ms, so gaps are checked with this slack.
EPSILON = 5e-3
# Bounds every wait, so that a regression fails instead of hanging.
DEADLINE = 10.0
EMPTY = {"config_flow": 0, "poll": 0, "backfill": 0}


class FakeApi:
    """Stand in for the Ambient client: record each call and answer as scripted."""

    def __init__(self) -> None:
        """Start with no calls, no scripted errors and no held calls."""
        self.calls: list[tuple[float, tuple[Hashable, ...]]] = []
        self.threads: list[int] = []
        self.errors: dict[tuple[Hashable, ...], list[Exception]] = {}
        self.gates: dict[tuple[Hashable, ...], asyncio.Event] = {}

    @property
    def sent(self) -> list[tuple[Hashable, ...]]:
        """Return the arguments of every call, in the order they were made."""
        return [args for _, args in self.calls]

    @property
    def times(self) -> list[float]:
        """Return when each call was made, by the loop's clock."""
        return [time for time, _ in self.calls]

    def fail(self, *args: Hashable, errors: list[Exception]) -> None:
        """Make the calls with these arguments raise these errors, one per call."""
        self.errors[args] = errors

    def hold(self, *args: Hashable) -> asyncio.Event:
        """Keep calls with these arguments in flight until the event is set."""
        gate = self.gates[args] = asyncio.Event()
        return gate

    async def fetch(self, *args: Hashable) -> str:
        """Answer like an API call: after the gate opens, an error or a result."""
        self.calls.append((asyncio.get_running_loop().time(), args))
        self.threads.append(threading.get_ident())
        if (gate := self.gates.get(args)) is not None:
            await gate.wait()
        if self.errors.get(args):
            raise self.errors[args].pop(0)
        return "answer " + " ".join(map(str, args))


def _queue(name: str) -> RequestQueue:
    """Return a queue with a short spacing that only its spacing holds back."""
    # A budget this large never delays a request, so the spacing alone shows.
    return RequestQueue(name, ApplicationKeyBudget(rate=1000), spacing=SPACING)


@pytest.fixture
def api() -> FakeApi:
    """Return a fake API."""
    return FakeApi()


@pytest.fixture
async def queue() -> AsyncIterator[RequestQueue]:
    """Return a running queue with a short spacing; stop it afterwards."""
    queue = _queue("test")
    queue.start()
    yield queue
    await queue.async_stop()


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run until the condition holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not condition():
        assert loop.time() < deadline, "the condition never held"
        await asyncio.sleep(0.001)


async def _busy(
    queue: RequestQueue, api: FakeApi
) -> tuple[asyncio.Event, asyncio.Task[Any]]:
    """Occupy the queue with a call held in flight; return its gate and task."""
    gate = api.hold("busy")
    task = asyncio.create_task(queue.submit(api.fetch, "busy"))
    await _until(lambda: ("busy",) in api.sent)
    return gate, task


async def _in_thread[T](func: Callable[[], T]) -> T:
    """Run a blocking function in a worker thread, bounded by the deadline."""
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.run_in_executor(None, func), DEADLINE)


async def _collect_garbage() -> None:
    """Free what finished requests left, so unretrieved errors are logged now."""
    for _ in range(3):
        await asyncio.sleep(0)
        gc.collect()


def _gaps(times: list[float]) -> list[float]:
    """Return the time between each pair of successive sends."""
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_idle_queue_sends_at_once(queue: RequestQueue, api: FakeApi) -> None:
    """A request to an idle queue is sent without waiting for the spacing."""
    loop = asyncio.get_running_loop()
    submitted = loop.time()

    assert await queue.submit(api.fetch, "a") == "answer a"

    assert api.times[0] - submitted < SPACING


async def test_requests_are_spaced(queue: RequestQueue, api: FakeApi) -> None:
    """Requests of one key are sent at least the spacing apart."""
    results = await asyncio.gather(*(queue.submit(api.fetch, n) for n in range(5)))

    assert results == [f"answer {n}" for n in range(5)]
    assert api.sent == [(n,) for n in range(5)]
    assert min(_gaps(api.times)) >= SPACING - EPSILON


async def test_spacing_counts_from_a_failed_send(
    queue: RequestQueue, api: FakeApi
) -> None:
    """A request that failed still holds back the next one by the spacing."""
    api.fail("a", errors=[AmbientServerError("HTTP 502")])

    outcomes = await asyncio.gather(
        queue.submit(api.fetch, "a"),
        queue.submit(api.fetch, "b"),
        return_exceptions=True,
    )

    assert isinstance(outcomes[0], AmbientServerError)
    assert outcomes[1] == "answer b"
    assert _gaps(api.times)[0] >= SPACING - EPSILON


async def test_spacing_counts_from_when_the_request_left(
    queue: RequestQueue, api: FakeApi
) -> None:
    """A request that leaves late holds the next one back from when it left."""
    loop = asyncio.get_running_loop()
    left: list[float] = []

    async def slow_to_leave() -> str:
        """Take a spacing to connect, then report the headers written."""
        await asyncio.sleep(SPACING)
        left.append(loop.time())
        report = REQUEST_SENT.get()
        assert report is not None
        report()
        return "answer"

    await asyncio.gather(queue.submit(slow_to_leave), queue.submit(api.fetch, "b"))

    assert api.times[0] - left[0] >= SPACING - EPSILON


def test_budget_counts_a_request_from_when_it_left() -> None:
    """A request restamped to when it left stays in the budget's second longer."""
    budget = ApplicationKeyBudget()
    for sent in (0.0, 0.5, 0.6):
        budget.record(sent)

    budget.restamp(0.0, 0.3)

    # Counted at 0.0 it would have left the window at 1.0; at 0.3 it stays
    # until 1.3, and the window still holds three requests.
    assert budget.delay(1.01) == pytest.approx(0.29)
    assert budget.delay(1.3) == 0.0


def test_budget_restamp_of_a_request_already_out_of_the_window() -> None:
    """A request that took over a second to leave is counted again from then."""
    budget = ApplicationKeyBudget()
    budget.record(0.0)
    budget.record(0.9)
    assert budget.delay(1.5) == 0.0

    budget.restamp(0.0, 1.5)
    budget.record(1.6)

    assert budget.delay(1.7) == pytest.approx(0.2)


async def test_queues_sharing_an_application_key_share_its_budget(
    api: FakeApi,
) -> None:
    """Two keys of one application key send no more than 3 requests in any second."""
    budget = ApplicationKeyBudget()
    first = RequestQueue("first", budget, spacing=SPACING)
    second = RequestQueue("second", budget, spacing=SPACING)
    first.start()
    second.start()

    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(first.submit(api.fetch, "first", n) for n in range(4)),
                *(second.submit(api.fetch, "second", n) for n in range(4)),
            ),
            DEADLINE,
        )
    finally:
        await first.async_stop()
        await second.async_stop()

    times = sorted(api.times)
    spans = [last - first for first, last in zip(times, times[3:], strict=False)]
    assert len(times) == 8
    # Any four successive sends span at least one second.
    assert min(spans) >= 1.0 - EPSILON


async def test_higher_priority_goes_first(queue: RequestQueue, api: FakeApi) -> None:
    """A busy queue sends the config flow, then polls, then backfill pages."""
    gate, busy = await _busy(queue, api)
    waiters = [
        asyncio.create_task(queue.submit(api.fetch, *args, priority=priority))
        for args, priority in (
            (("page", 1), Priority.BACKFILL),
            (("page", 2), Priority.BACKFILL),
            (("page", 3), Priority.BACKFILL),
            (("poll",), Priority.POLL),
            (("flow",), Priority.CONFIG_FLOW),
        )
    ]
    await _until(lambda: queue.depth() == {"config_flow": 1, "poll": 1, "backfill": 3})

    gate.set()
    await asyncio.wait_for(asyncio.gather(busy, *waiters), DEADLINE)

    assert api.sent == [
        ("busy",),
        ("flow",),
        ("poll",),
        ("page", 1),
        ("page", 2),
        ("page", 3),
    ]


async def test_long_wait_promotes_a_request(
    queue: RequestQueue, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill page that has waited long goes before a poll that just came."""
    monkeypatch.setattr(request_queue, "AGING_SECONDS", 0.02)
    gate, busy = await _busy(queue, api)
    page = asyncio.create_task(
        queue.submit(api.fetch, "page", priority=Priority.BACKFILL)
    )
    # Waiting 0.2 s at 0.02 s per level is worth ten levels; a poll is one above.
    await asyncio.sleep(0.2)
    poll = asyncio.create_task(queue.submit(api.fetch, "poll", priority=Priority.POLL))
    await _until(lambda: queue.depth()["poll"] == 1)

    gate.set()
    await asyncio.wait_for(asyncio.gather(busy, page, poll), DEADLINE)

    assert api.sent == [("busy",), ("page",), ("poll",)]


async def test_identical_requests_share_one_call(
    queue: RequestQueue, api: FakeApi
) -> None:
    """Identical requests waiting together make one call and all get its result."""
    *same, other = await asyncio.gather(
        queue.submit(api.fetch, "same"),
        queue.submit(api.fetch, "same"),
        queue.submit(api.fetch, "same"),
        queue.submit(api.fetch, "other"),
    )

    assert same == ["answer same"] * 3
    assert other == "answer other"
    assert api.sent == [("same",), ("other",)]
    assert queue.metrics.merged == 2


async def test_request_joins_an_identical_one_in_flight(
    queue: RequestQueue, api: FakeApi
) -> None:
    """A request identical to one in flight waits for that call, not a new one."""
    gate = api.hold("same")
    first = asyncio.create_task(queue.submit(api.fetch, "same"))
    await _until(lambda: api.sent == [("same",)])
    second = asyncio.create_task(queue.submit(api.fetch, "same"))
    await _until(lambda: queue.metrics.merged == 1)

    gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), DEADLINE)

    assert first.result() == second.result() == "answer same"
    assert api.sent == [("same",)]


async def test_requests_with_different_args_do_not_merge(
    queue: RequestQueue, api: FakeApi
) -> None:
    """Requests differing in any argument are separate calls."""
    one, two = await asyncio.gather(
        queue.submit(api.fetch, "mac", 1),
        queue.submit(api.fetch, "mac", 2),
    )

    assert (one, two) == ("answer mac 1", "answer mac 2")
    assert api.sent == [("mac", 1), ("mac", 2)]
    assert queue.metrics.merged == 0


async def test_merged_requests_all_get_the_error(
    queue: RequestQueue, api: FakeApi
) -> None:
    """An error of a shared call reaches every waiter of it."""
    error = AmbientServerError("HTTP 503")
    api.fail("same", errors=[error])

    outcomes: tuple[object, object] = await asyncio.gather(
        queue.submit(api.fetch, "same"),
        queue.submit(api.fetch, "same"),
        return_exceptions=True,
    )

    assert outcomes[0] is error
    assert outcomes[1] is error
    assert api.sent == [("same",)]


async def test_merging_lifts_a_request_to_the_higher_priority(
    queue: RequestQueue, api: FakeApi
) -> None:
    """A poll joining a waiting backfill request makes it go as a poll."""
    gate, busy = await _busy(queue, api)
    older = asyncio.create_task(
        queue.submit(api.fetch, "older", priority=Priority.BACKFILL)
    )
    shared = asyncio.create_task(
        queue.submit(api.fetch, "shared", priority=Priority.BACKFILL)
    )
    poll = asyncio.create_task(
        queue.submit(api.fetch, "shared", priority=Priority.POLL)
    )
    await _until(lambda: queue.depth() == {"config_flow": 0, "poll": 1, "backfill": 1})

    gate.set()
    await asyncio.wait_for(asyncio.gather(busy, older, shared, poll), DEADLINE)

    assert api.sent == [("busy",), ("shared",), ("older",)]
    assert shared.result() == poll.result() == "answer shared"


async def test_rate_limited_request_is_retried(
    queue: RequestQueue, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a 429 the queue pauses, sends the request again and returns its result."""
    monkeypatch.setattr(request_queue, "BACKOFF_FIRST", 0.1)
    api.fail("a", errors=[AmbientRateLimitError("429")])

    assert await asyncio.wait_for(queue.submit(api.fetch, "a"), DEADLINE) == "answer a"

    assert api.sent == [("a",), ("a",)]
    # The backoff is the first step, jittered by at most a fifth.
    assert _gaps(api.times)[0] >= 0.8 * 0.1 - EPSILON
    assert queue.metrics.rate_limited == 1
    assert queue.metrics.retried == 1
    assert queue.metrics.sent == 2
    assert not queue.metrics.errors


async def test_rate_limit_pauses_the_whole_queue(
    queue: RequestQueue, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During the backoff after a 429 no other request of the key is sent."""
    monkeypatch.setattr(request_queue, "BACKOFF_FIRST", 0.1)
    api.fail("a", errors=[AmbientRateLimitError("429")])

    await asyncio.wait_for(
        asyncio.gather(queue.submit(api.fetch, "a"), queue.submit(api.fetch, "b")),
        DEADLINE,
    )

    assert api.sent[0] == ("a",)
    assert min(api.times[1:]) - api.times[0] >= 0.8 * 0.1 - EPSILON


async def test_rate_limit_error_reaches_the_caller_after_the_last_retry(
    queue: RequestQueue, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request still rate limited after the last retry fails with the 429."""
    monkeypatch.setattr(request_queue, "BACKOFF_FIRST", 0.001)
    retries = request_queue.MAX_RATE_LIMIT_RETRIES
    api.fail("a", errors=[AmbientRateLimitError("429") for _ in range(retries + 1)])

    with pytest.raises(AmbientRateLimitError):
        await asyncio.wait_for(queue.submit(api.fetch, "a"), DEADLINE)

    assert len(api.sent) == retries + 1
    assert queue.metrics.rate_limited == retries + 1
    assert queue.metrics.retried == retries


@pytest.mark.parametrize(
    "error",
    [AmbientServerError("HTTP 500"), ValueError("unexpected")],
    ids=["ambient-error", "other-error"],
)
async def test_other_errors_reach_the_caller_unretried(
    queue: RequestQueue, api: FakeApi, error: Exception
) -> None:
    """Any error but a 429 goes straight to the caller and is counted by type."""
    api.fail("a", errors=[error])

    with pytest.raises(type(error)) as excinfo:
        await queue.submit(api.fetch, "a")

    assert excinfo.value is error
    assert api.sent == [("a",)]
    assert queue.metrics.errors == {type(error).__name__: 1}
    assert queue.metrics.retried == 0
    assert await queue.submit(api.fetch, "b") == "answer b"


async def test_thread_and_loop_requests_both_complete(
    queue: RequestQueue, api: FakeApi
) -> None:
    """Requests from a worker thread and from the loop are answered together."""
    loop_thread = threading.get_ident()

    def backfill() -> list[str]:
        """Fetch three pages from the worker thread."""
        return [
            queue.submit_threadsafe(api.fetch, "page", n, timeout=DEADLINE)
            for n in range(3)
        ]

    pages, polls = await asyncio.gather(
        _in_thread(backfill),
        asyncio.gather(*(queue.submit(api.fetch, "poll", n) for n in range(3))),
    )

    assert pages == [f"answer page {n}" for n in range(3)]
    assert polls == [f"answer poll {n}" for n in range(3)]
    assert set(api.threads) == {loop_thread}


async def test_thread_waiting_on_the_loop_does_not_deadlock(
    queue: RequestQueue, api: FakeApi
) -> None:
    """A thread blocked on a request is answered while the loop only awaits it.

    This guards the seed's deadlock. The worker thread blocks on a future that
    only the loop can resolve, because the API call must run on the loop, and the
    loop's only business is to await that thread. If the bridge waited on the
    loop's thread, or queued the request from the worker thread without waking
    the loop, each would wait for the other forever; the deadline turns that
    hang into a failure.
    """
    result = await _in_thread(
        functools.partial(queue.submit_threadsafe, api.fetch, "page", timeout=DEADLINE)
    )

    assert result == "answer page"
    assert api.threads == [threading.get_ident()]


async def test_submit_threadsafe_on_the_loop_thread_raises_at_once(
    queue: RequestQueue, api: FakeApi
) -> None:
    """Blocking on the loop's own thread is refused at once, not after a timeout."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(RuntimeError, match="event loop's thread"):
        queue.submit_threadsafe(api.fetch, "page", timeout=2.0)

    assert loop.time() - started < 0.5
    await asyncio.sleep(2 * SPACING)
    assert api.sent == []
    assert queue.depth() == EMPTY


@pytest.mark.parametrize("stopped", [False, True], ids=["never started", "stopped"])
async def test_submit_threadsafe_on_a_queue_not_running_raises_at_once(
    api: FakeApi, stopped: bool
) -> None:
    """A thread asking a queue that never started, or stopped, is refused at once."""
    queue = _queue("not running")
    if stopped:
        queue.start()
        await queue.async_stop()
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(QueueStoppedError):
        await _in_thread(
            functools.partial(queue.submit_threadsafe, api.fetch, "page", timeout=5.0)
        )

    assert loop.time() - started < 0.5
    assert api.sent == []


async def test_submit_on_a_stopped_queue_raises(api: FakeApi) -> None:
    """A loop task asking a stopped queue is refused."""
    queue = _queue("stopped")
    queue.start()
    await queue.async_stop()

    with pytest.raises(QueueStoppedError):
        await queue.submit(api.fetch, "poll")

    assert not queue.running
    assert api.sent == []


async def test_submit_threadsafe_timeout_withdraws_the_request(
    queue: RequestQueue, api: FakeApi
) -> None:
    """A thread that gives up gets QueueTimeoutError and its request is never sent."""
    gate, busy = await _busy(queue, api)

    with pytest.raises(QueueTimeoutError):
        await _in_thread(
            functools.partial(queue.submit_threadsafe, api.fetch, "page", timeout=0.1)
        )
    await _until(lambda: queue.depth() == EMPTY)
    gate.set()
    await asyncio.wait_for(busy, DEADLINE)
    await asyncio.sleep(3 * SPACING)

    assert api.sent == [("busy",)]


async def test_submit_threadsafe_cancel_withdraws_the_request(
    queue: RequestQueue, api: FakeApi
) -> None:
    """A thread told to stop is released at once and its request never sent."""
    gate, busy = await _busy(queue, api)
    cancel = threading.Event()
    waiting = asyncio.create_task(
        _in_thread(
            functools.partial(
                queue.submit_threadsafe,
                api.fetch,
                "page",
                timeout=DEADLINE,
                cancel=cancel,
            )
        )
    )
    await _until(lambda: queue.depth()["backfill"] == 1)

    loop = asyncio.get_running_loop()
    cancelled = loop.time()
    cancel.set()
    with pytest.raises(QueueCancelledError):
        await waiting
    released = loop.time() - cancelled

    assert released < 10 * request_queue.CANCEL_CHECK
    assert queue.depth() == EMPTY
    gate.set()
    await busy
    assert api.sent == [("busy",)]


async def test_thread_giving_up_keeps_a_merged_request_for_the_loop(
    queue: RequestQueue, api: FakeApi
) -> None:
    """A thread timing out does not withdraw a request a loop task also waits for."""
    gate, _ = await _busy(queue, api)
    poll = asyncio.create_task(queue.submit(api.fetch, "shared"))
    await _until(lambda: queue.depth()["poll"] == 1)

    with pytest.raises(QueueTimeoutError):
        await _in_thread(
            functools.partial(queue.submit_threadsafe, api.fetch, "shared", timeout=0.1)
        )
    gate.set()

    assert await asyncio.wait_for(poll, DEADLINE) == "answer shared"
    assert api.sent == [("busy",), ("shared",)]


async def test_cancelled_waiter_withdraws_its_request(
    queue: RequestQueue, api: FakeApi
) -> None:
    """A request whose only waiter is cancelled before it is sent is never sent."""
    gate, busy = await _busy(queue, api)
    waiter = asyncio.create_task(queue.submit(api.fetch, "poll"))
    await _until(lambda: queue.depth()["poll"] == 1)

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert queue.depth() == EMPTY
    gate.set()
    await asyncio.wait_for(busy, DEADLINE)
    await asyncio.sleep(3 * SPACING)
    assert api.sent == [("busy",)]


async def test_cancelled_waiter_of_a_merged_request_keeps_it_for_the_other(
    queue: RequestQueue, api: FakeApi
) -> None:
    """Cancelling one of two waiters of a shared request leaves it to the other."""
    gate, _ = await _busy(queue, api)
    leaving = asyncio.create_task(queue.submit(api.fetch, "shared"))
    staying = asyncio.create_task(queue.submit(api.fetch, "shared"))
    await _until(lambda: queue.metrics.merged == 1)

    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    gate.set()

    assert await asyncio.wait_for(staying, DEADLINE) == "answer shared"
    assert api.sent == [("busy",), ("shared",)]


async def test_cancelled_waiter_of_a_request_in_flight_lets_the_call_finish(
    queue: RequestQueue, api: FakeApi
) -> None:
    """Cancelling the waiter of a call in flight leaves the queue serving."""
    gate, busy = await _busy(queue, api)

    busy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await busy
    gate.set()

    assert await asyncio.wait_for(queue.submit(api.fetch, "next"), DEADLINE) == (
        "answer next"
    )
    assert api.sent == [("busy",), ("next",)]


async def test_stop_fails_every_waiter_promptly(api: FakeApi) -> None:
    """Stopping fails the call in flight, the waiting tasks and a waiting thread."""
    queue = _queue("stopping")
    queue.start()
    _, busy = await _busy(queue, api)
    polls = [
        asyncio.create_task(queue.submit(api.fetch, "poll")),
        asyncio.create_task(queue.submit(api.fetch, "poll")),
        asyncio.create_task(
            queue.submit(api.fetch, "flow", priority=Priority.CONFIG_FLOW)
        ),
    ]
    loop = asyncio.get_running_loop()
    thread = loop.run_in_executor(
        None,
        functools.partial(queue.submit_threadsafe, api.fetch, "page", timeout=DEADLINE),
    )
    await _until(lambda: queue.depth() == {"config_flow": 1, "poll": 1, "backfill": 1})

    await queue.async_stop()

    async with asyncio.timeout(1.0):
        outcomes = await asyncio.gather(busy, *polls, thread, return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [QueueStoppedError] * 5
    assert api.sent == [("busy",)]
    assert queue.depth() == EMPTY


async def _stop_as_a_waiter_is_cancelled(api: FakeApi) -> list[type[BaseException]]:
    """Stop a queue, cancel a waiter before it wakes; return how each waiter ended."""
    queue = _queue("stopping")
    queue.start()
    _, busy = await _busy(queue, api)
    waiter = asyncio.create_task(queue.submit(api.fetch, "poll"))
    await _until(lambda: queue.depth()["poll"] == 1)

    await queue.async_stop()
    waiter.cancel()
    outcomes = await asyncio.gather(busy, waiter, return_exceptions=True)

    return [type(outcome) for outcome in outcomes]


async def _fail_as_the_waiter_is_cancelled() -> None:
    """Fail a call, and cancel its waiter before it wakes up to take the error."""

    async def call() -> None:
        """Fail, with the cancellation of the waiter already scheduled."""
        asyncio.get_running_loop().call_soon(waiter.cancel)
        raise AmbientServerError("HTTP 500")

    queue = _queue("failing")
    queue.start()
    waiter = asyncio.create_task(queue.submit(call))
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await queue.async_stop()


async def test_waiter_cancelled_as_the_queue_stops_sees_one_outcome(
    api: FakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    """A waiter cancelled just as the queue stops ends cancelled or stopped, quietly.

    Home Assistant cancels tasks while it shuts down, so a waiter can be cancelled
    after the queue failed its request but before the waiter woke up to see it.
    """
    gc.collect()

    busy, waiter = await _stop_as_a_waiter_is_cancelled(api)

    assert busy is QueueStoppedError
    assert waiter in (asyncio.CancelledError, QueueStoppedError)
    await _collect_garbage()
    assert "never retrieved" not in caplog.text


async def test_waiter_cancelled_as_its_call_fails_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A waiter cancelled just after its call failed leaves no unretrieved error."""
    gc.collect()

    await _fail_as_the_waiter_is_cancelled()

    await _collect_garbage()
    assert "never retrieved" not in caplog.text


async def test_every_waiter_is_resolved_exactly_once(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results, errors, retries, cancellations and a stop each end a waiter once."""
    monkeypatch.setattr(request_queue, "BACKOFF_FIRST", 0.01)
    queue = _queue("mixed")
    queue.start()
    outcomes: list[tuple[str, str]] = []

    async def wait(name: str, *args: Hashable) -> None:
        """Submit a request and record how it ended for this waiter."""
        try:
            result = await queue.submit(api.fetch, *args)
        except asyncio.CancelledError:
            outcomes.append((name, "cancelled"))
            raise
        except Exception as err:  # noqa: BLE001
            outcomes.append((name, type(err).__name__))
        else:
            outcomes.append((name, result))

    def thread_wait() -> None:
        """Submit a request from a worker thread and record how it ended."""
        try:
            result = queue.submit_threadsafe(
                api.fetch, "page", timeout=DEADLINE, priority=Priority.CONFIG_FLOW
            )
        except Exception as err:  # noqa: BLE001
            outcomes.append(("thread", type(err).__name__))
        else:
            outcomes.append(("thread", result))

    api.fail("broken", errors=[AmbientServerError("HTTP 500")])
    api.fail("limited", errors=[AmbientRateLimitError("429")])
    gate, busy = await _busy(queue, api)
    api.hold("last")
    tasks = {
        name: asyncio.create_task(wait(name, *args))
        for name, args in (
            ("ok", ("ok",)),
            ("broken 1", ("broken",)),
            ("broken 2", ("broken",)),
            ("limited", ("limited",)),
            ("dropped", ("dropped",)),
            ("shared leaving", ("shared",)),
            ("shared staying", ("shared",)),
            ("last", ("last",)),
            ("after last", ("after last",)),
        )
    }
    thread = asyncio.create_task(_in_thread(thread_wait))
    await _until(lambda: sum(queue.depth().values()) == 8)
    tasks["dropped"].cancel()
    tasks["shared leaving"].cancel()
    gate.set()
    await _until(lambda: ("last",) in api.sent)
    # Resolving any request twice would have killed the worker.
    assert queue.running
    await queue.async_stop()
    await asyncio.wait_for(
        asyncio.gather(busy, thread, *tasks.values(), return_exceptions=True), DEADLINE
    )

    assert sorted(outcomes) == [
        ("after last", "QueueStoppedError"),
        ("broken 1", "AmbientServerError"),
        ("broken 2", "AmbientServerError"),
        ("dropped", "cancelled"),
        ("last", "QueueStoppedError"),
        ("limited", "answer limited"),
        ("ok", "answer ok"),
        ("shared leaving", "cancelled"),
        ("shared staying", "answer shared"),
        ("thread", "answer page"),
    ]


async def test_metrics_report_wait_quantiles(queue: RequestQueue, api: FakeApi) -> None:
    """After a few requests the metrics give the median and 95th percentile wait."""
    loop = asyncio.get_running_loop()
    assert queue.metrics.as_dict()["wait_p50"] is None
    started = loop.time()

    await asyncio.gather(*(queue.submit(api.fetch, n) for n in range(3)))

    elapsed = loop.time() - started
    metrics = queue.metrics.as_dict()
    # The three waited about nothing, one spacing and two spacings.
    assert SPACING - EPSILON <= metrics["wait_p50"] < metrics["wait_p95"] <= elapsed
    assert metrics["wait_p95"] >= 0.95 * 2 * SPACING - EPSILON
    assert metrics["sent"] == 3
    assert metrics["merged"] == 0
    assert metrics["errors"] == {}
