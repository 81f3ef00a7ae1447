"""An asyncio event loop on a virtual clock, for tests of timing without waiting.

When the loop has nothing to do but wait for its next timer, the clock jumps to
that timer instead of sleeping, so an hour of backoffs passes in milliseconds.

Threads run in real time, which a jumping clock would outrun. So the clock stands
still while any thread started with `start_thread` is running, and moves only
while every such thread waits for the loop: in `sleep_thread_until`, or inside a
coroutine it submitted that runs under `thread_waits`. A thread's actions thus
happen at the virtual instant it was woken, whatever they cost in real time.
"""

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
import selectors
import threading

# How long the loop blocks for real, at most, while a thread runs; it then looks
# again, so a thread that dies without a word cannot freeze the loop for good.
REAL_POLL = 0.05

_FROM_THREAD: ContextVar[bool] = ContextVar("from_virtual_time_thread", default=False)


class _VirtualSelector(selectors.DefaultSelector):
    """A selector that advances the loop's clock instead of sleeping."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        """Initialize the selector for `loop`."""
        super().__init__()
        self._loop = loop

    def select(
        self, timeout: float | None = None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        """Return ready events; when there are none, move the clock to the timer."""
        if timeout == 0:
            return super().select(0)
        if self._loop.running_threads:
            return super().select(REAL_POLL)
        if (events := super().select(0)) or timeout is None:
            # With no timer at all, only a thread can bring work: wait for it.
            return events or super().select(None)
        self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps from timer to timer."""

    def __init__(self) -> None:
        """Start the clock at zero with no threads."""
        self._now = 0.0
        self.running_threads = 0
        self.threads: list[threading.Thread] = []
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        """Return the virtual time in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self._now += seconds

    def start_thread(self, target: Callable[[], None]) -> asyncio.Future[None]:
        """Run `target` in a new thread; return a future done when it ends."""
        done: asyncio.Future[None] = self.create_future()

        def run() -> None:
            """Run the target, then tell the loop."""
            _FROM_THREAD.set(True)
            error: BaseException | None = None
            try:
                target()
            except BaseException as err:  # noqa: BLE001
                error = err
            self.call_soon_threadsafe(self._thread_ended, done, error)

        self.running_threads += 1
        thread = threading.Thread(target=run, name=f"virtual-{len(self.threads)}")
        self.threads.append(thread)
        thread.start()
        return done

    def sleep_thread_until(self, when: float, timeout: float) -> None:
        """Block the calling thread until the virtual clock reads `when`."""
        woken = threading.Event()
        self.call_soon_threadsafe(self._wake_thread_at, when, woken)
        if not woken.wait(timeout):
            raise TimeoutError("The loop did not wake the thread")

    @contextmanager
    def thread_waits(self) -> Iterator[None]:
        """Let the clock run while the thread that submitted this coroutine waits."""
        if not _FROM_THREAD.get():
            yield
            return
        self.running_threads -= 1
        try:
            yield
        finally:
            self.running_threads += 1

    def _wake_thread_at(self, when: float, woken: threading.Event) -> None:
        """Let the clock run until `when`, then wake the thread."""
        self.running_threads -= 1
        self.call_at(when, self._wake_thread, woken)

    def _wake_thread(self, woken: threading.Event) -> None:
        """Stop the clock and wake a thread."""
        self.running_threads += 1
        woken.set()

    def _thread_ended(
        self, done: asyncio.Future[None], error: BaseException | None
    ) -> None:
        """Note that a thread has ended."""
        self.running_threads -= 1
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
