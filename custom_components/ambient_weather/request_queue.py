"""The request queue: the one way our code reaches the Ambient API.

There is one queue per API key, shared by everything that uses that key: the
config flow, the coordinator's polls and the backfill jobs. Its promises:

- Requests of one API key are sent at least `MIN_SPACING` seconds apart, counted
  from when each was sent, whether it succeeded or not. "Sent" is when the
  client reports the request's headers written (see `api.REQUEST_SENT`), or
  when the queue let it go if the client cannot tell. Queues whose keys share an
  application key also share its budget of three requests in any one second.
- The highest priority goes first (config flow, then polls, then backfill pages);
  a request that has waited long is promoted, so none starves.
- Identical requests waiting or in flight at the same time share one API call and
  all get its result or its error.
- A 429 pauses the whole queue with a growing, jittered backoff, then the same
  request is sent again, up to `MAX_RATE_LIMIT_RETRIES` times.
- Every waiter is resolved exactly once: with the result, the error, or its own
  cancellation. Stopping the queue fails every waiter with `QueueStoppedError`.
- `submit_threadsafe` is the bridge for other threads. It refuses to run on the
  loop's own thread (waiting there would deadlock the loop), fails at once when
  the queue is not running, and withdraws its request when its timeout expires
  or the caller's cancel event is set.

It never logs a key: its name is a label chosen by the owner.
"""

import asyncio
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Future as ConcurrentFuture
from contextlib import suppress
from dataclasses import dataclass, field
from enum import IntEnum
from functools import partial
import logging
import math
import random
import statistics
import threading
import time
from typing import Any

from .api import REQUEST_SENT, AmbientError, AmbientRateLimitError

_LOGGER = logging.getLogger(__name__)

# Ambient allows one request per second per API key and counts when requests
# arrive. Spacing is counted from when a request's headers were written, so a
# slow connection or a busy loop cannot bring two arrivals closer; the margin is
# for the network alone. 25 ms leaves backfill 96 % of the key's rate beside a
# poll a minute.
MIN_SPACING = 1.025
APPLICATION_KEY_RATE = 3
# A request loses one priority level for every AGING_SECONDS it has waited.
AGING_SECONDS = 30.0
BACKOFF_FIRST = 2.0
BACKOFF_CAP = 60.0
MAX_RATE_LIMIT_RETRIES = 6
# How often a thread waiting on the bridge looks at its cancel event.
CANCEL_CHECK = 0.1

type ApiCall = Callable[..., Awaitable[Any]]


class Priority(IntEnum):
    """How urgent a request is; lower goes first."""

    CONFIG_FLOW = 0
    POLL = 1
    BACKFILL = 2


class QueueStoppedError(Exception):
    """The queue is not running, or stopped before the request was answered."""


class QueueTimeoutError(Exception):
    """A thread gave up waiting for its request; the request was withdrawn."""


class QueueCancelledError(Exception):
    """A thread's request was withdrawn because the thread was told to stop."""


class ApplicationKeyBudget:
    """The requests per second that all queues of one application key share."""

    def __init__(self, rate: int = APPLICATION_KEY_RATE) -> None:
        """Initialize the budget."""
        self._rate = rate
        self._sent: deque[float] = deque()

    def delay(self, now: float) -> float:
        """Return how long to wait before the next request may be sent."""
        while self._sent and self._sent[0] <= now - 1.0:
            self._sent.popleft()
        if len(self._sent) < self._rate:
            return 0.0
        return self._sent[0] + 1.0 - now

    def record(self, now: float) -> None:
        """Count a request sent at `now`."""
        self._sent.append(now)

    def restamp(self, was: float, now: float) -> None:
        """Move a request counted at `was` to `now`, when it really left."""
        with suppress(ValueError):
            # Gone already if the request took over a second to leave.
            self._sent.remove(was)
        # Other queues may have counted requests since: keep the order in which
        # `delay` reads the oldest first.
        self._sent = deque(sorted((*self._sent, now)))


@dataclass(eq=False)
class _Request:
    """One API call and the callers waiting for it."""

    key: Hashable
    call: ApiCall
    args: tuple[Any, ...]
    priority: Priority
    enqueued: float
    future: asyncio.Future[Any]
    waiters: int = 0
    rate_limited: int = 0
    in_flight: bool = False


@dataclass
class QueueMetrics:
    """What a queue has done since it started."""

    sent: int = 0
    merged: int = 0
    retried: int = 0
    rate_limited: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    waits: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    def as_dict(self) -> dict[str, Any]:
        """Return the metrics as plain data."""
        waits = sorted(self.waits)
        return {
            "sent": self.sent,
            "merged": self.merged,
            "retried": self.retried,
            "rate_limited": self.rate_limited,
            "errors": dict(self.errors),
            "wait_p50": _quantile(waits, 0.5),
            "wait_p95": _quantile(waits, 0.95),
        }


class RequestQueue:
    """Send one API key's requests one at a time, spaced and prioritised."""

    def __init__(
        self,
        name: str,
        budget: ApplicationKeyBudget | None = None,
        *,
        spacing: float | None = None,
    ) -> None:
        """Initialize the queue; `name` labels it in logs and must not be a key."""
        self.name = name
        self.metrics = QueueMetrics()
        self._budget = budget or ApplicationKeyBudget()
        self._spacing = MIN_SPACING if spacing is None else spacing
        self._pending: dict[Priority, deque[_Request]] = {p: deque() for p in Priority}
        self._requests: dict[Hashable, _Request] = {}
        self._wakeup = asyncio.Event()
        self._last_sent = -math.inf
        self._backoff_until = -math.inf
        self._backoff_step = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id: int | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def budget(self) -> ApplicationKeyBudget:
        """Return the application key's budget this queue draws on."""
        return self._budget

    @budget.setter
    def budget(self, budget: ApplicationKeyBudget) -> None:
        """Draw on another application key's budget from the next request on."""
        self._budget = budget

    @property
    def running(self) -> bool:
        """Return True while the queue accepts requests."""
        return self._worker is not None and not self._worker.done()

    def depth(self) -> dict[str, int]:
        """Return the number of waiting requests per priority."""
        return {p.name.lower(): len(q) for p, q in self._pending.items()}

    def start(self) -> None:
        """Start the worker on the running event loop."""
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._worker = self._loop.create_task(self._run(), name=f"queue {self.name}")

    async def async_stop(self) -> None:
        """Stop the worker and fail every request still waiting."""
        if self._worker is not None:
            self._worker.cancel()
            with suppress(asyncio.CancelledError):
                await self._worker
        for request in self._requests.values():
            self._resolve(request, error=QueueStoppedError("The queue stopped"))
        self._requests.clear()
        for pending in self._pending.values():
            pending.clear()

    async def submit(
        self, call: ApiCall, *args: Any, priority: Priority = Priority.POLL
    ) -> Any:
        """Queue `call(*args)` and return its result once it has been sent."""
        if not self.running:
            raise QueueStoppedError("The request queue is not running")
        request = self._enqueue(call, args, priority)
        request.waiters += 1
        # Each waiter reads the outcome through a future of its own: a shield of
        # the shared one would, once cancelled, log the shared future's error
        # that the other waiters still receive.
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        relay = partial(_relay, answer)
        request.future.add_done_callback(relay)
        try:
            return await answer
        except asyncio.CancelledError:
            request.future.remove_done_callback(relay)
            _retrieve(answer)
            request.waiters -= 1
            if not (request.waiters or request.in_flight or request.future.done()):
                self._withdraw(request)
            raise

    def submit_threadsafe(
        self,
        call: ApiCall,
        *args: Any,
        timeout: float,
        priority: Priority = Priority.BACKFILL,
        cancel: threading.Event | None = None,
    ) -> Any:
        """Queue `call(*args)` from another thread and block until it is answered.

        The request is withdrawn, and the thread released, when `timeout` expires
        or, within `CANCEL_CHECK` seconds, when `cancel` is set.
        """
        loop = self._loop
        if loop is None or not self.running or loop.is_closed():
            raise QueueStoppedError("The request queue is not running")
        if threading.get_ident() == self._thread_id:
            raise RuntimeError(
                "submit_threadsafe was called on the event loop's thread, where "
                "waiting would deadlock the loop; await submit() instead"
            )
        future: ConcurrentFuture[Any] = asyncio.run_coroutine_threadsafe(
            self.submit(call, *args, priority=priority), loop
        )
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                return future.result(min(left, CANCEL_CHECK) if cancel else left)
            except TimeoutError:
                if cancel is not None and cancel.is_set() and future.cancel():
                    raise QueueCancelledError("The request was withdrawn") from None
        if future.cancel():
            raise QueueTimeoutError(
                f"No answer within {timeout} s; the request was withdrawn"
            )
        # The answer came as the timeout expired: deliver it.
        return future.result()

    def _enqueue(
        self, call: ApiCall, args: tuple[Any, ...], priority: Priority
    ) -> _Request:
        """Return the request for `call(*args)`, joining an identical one."""
        key = (call, args)
        if (request := self._requests.get(key)) is not None:
            self.metrics.merged += 1
            if priority < request.priority and not request.in_flight:
                self._pending[request.priority].remove(request)
                request.priority = priority
                self._pending[priority].append(request)
            return request
        loop = asyncio.get_running_loop()
        request = _Request(key, call, args, priority, loop.time(), loop.create_future())
        # A request nobody waits for any more must not leave its error behind
        # as "never retrieved".
        request.future.add_done_callback(_retrieve)
        self._requests[key] = request
        self._pending[priority].append(request)
        self._wakeup.set()
        return request

    def _withdraw(self, request: _Request) -> None:
        """Drop a request nobody waits for any more."""
        self._pending[request.priority].remove(request)
        del self._requests[request.key]
        request.future.cancel()

    async def _run(self) -> None:
        """Send requests until cancelled."""
        # Set in this task's own context: every call awaited below reports to it.
        REQUEST_SENT.set(self._sent_now)
        while True:
            request = await self._next_request()
            await self._send(request)

    async def _next_request(self) -> _Request:
        """Wait for a free slot, then take the most urgent request."""
        loop = asyncio.get_running_loop()
        while True:
            if not any(self._pending.values()):
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            now = loop.time()
            delay = max(
                self._last_sent + self._spacing - now,
                self._backoff_until - now,
                self._budget.delay(now),
            )
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            request = min(
                (q[0] for q in self._pending.values() if q),
                key=lambda r: (
                    r.priority - (now - r.enqueued) / AGING_SECONDS,
                    r.enqueued,
                ),
            )
            self._pending[request.priority].popleft()
            self._budget.record(now)
            self._last_sent = now
            return request

    async def _send(self, request: _Request) -> None:
        """Make the API call of a request and resolve its waiters."""
        loop = asyncio.get_running_loop()
        if not request.rate_limited:
            self.metrics.waits.append(loop.time() - request.enqueued)
        self.metrics.sent += 1
        request.in_flight = True
        try:
            result = await request.call(*request.args)
        except AmbientRateLimitError as err:
            self.metrics.rate_limited += 1
            self._back_off(loop.time())
            if request.rate_limited < MAX_RATE_LIMIT_RETRIES and request.waiters:
                request.rate_limited += 1
                request.in_flight = False
                self.metrics.retried += 1
                self._pending[request.priority].appendleft(request)
                return
            self._finish(request, error=err)
        except AmbientError as err:
            self.metrics.errors[type(err).__name__] += 1
            self._finish(request, error=err)
        except Exception as err:  # noqa: BLE001
            # Whatever the call raised belongs to its callers, not to the worker.
            self.metrics.errors[type(err).__name__] += 1
            self._finish(request, error=err)
        else:
            self._recover()
            self._finish(request, result=result)

    def _sent_now(self) -> None:
        """Count the request in flight from now: its headers are going out."""
        now = asyncio.get_running_loop().time()
        self._budget.restamp(self._last_sent, now)
        self._last_sent = now

    def _back_off(self, now: float) -> None:
        """Pause the queue after a 429, longer each time in a row."""
        if self._backoff_step == 0:
            _LOGGER.warning(
                "Ambient API rate limit reached for %s; backing off", self.name
            )
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2**self._backoff_step)
        # Stop doubling at the cap, where 2**step would in the end overflow.
        if delay < BACKOFF_CAP:
            self._backoff_step += 1
        self._backoff_until = now + delay * random.uniform(0.8, 1.2)

    def _recover(self) -> None:
        """Note a success; end a backoff if one was running."""
        if self._backoff_step:
            _LOGGER.info("Ambient API requests for %s succeed again", self.name)
            self._backoff_step = 0

    def _finish(
        self,
        request: _Request,
        *,
        result: Any = None,
        error: BaseException | None = None,
    ) -> None:
        """Forget a request and resolve its waiters."""
        del self._requests[request.key]
        self._resolve(request, result=result, error=error)

    @staticmethod
    def _resolve(
        request: _Request, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        """Resolve a request's future once; cancel it when nobody waits."""
        if request.future.done():
            return
        if not request.waiters:
            request.future.cancel()
        elif error is not None:
            request.future.set_exception(error)
        else:
            request.future.set_result(result)


def _relay(answer: asyncio.Future[Any], outcome: asyncio.Future[Any]) -> None:
    """Pass a request's outcome on to one waiter, unless that waiter gave up."""
    if answer.done():
        return
    if outcome.cancelled():
        answer.cancel()
    elif (error := outcome.exception()) is not None:
        answer.set_exception(error)
    else:
        answer.set_result(outcome.result())


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's error as seen."""
    if future.done() and not future.cancelled():
        future.exception()


def _quantile(values: list[float], q: float) -> float | None:
    """Return the q-quantile of sorted values, or None when there are none."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]
