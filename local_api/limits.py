"""Ambient's two request-rate limits, kept on the server's monotonic clock.

Ambient documents at most one request per second per `apiKey` and three requests
per second per `applicationKey`, and answers anything faster with HTTP 429.

Here every request that got past key validation counts as an attempt, whether it
was served or refused with 429. So a client that keeps retrying too fast keeps
being refused until it slows down, the way real rate limiters that count attempts
behave. Requests refused for a bad key (401) do not count.
"""

from collections import defaultdict, deque
from dataclasses import dataclass, field

USER_MIN_GAP = 1.0
APPLICATION_WINDOW = 1.0
APPLICATION_MAX_REQUESTS = 3


@dataclass
class RateLimiter:
    """Decide, per attempt, whether Ambient's rate limits would refuse it."""

    user_min_gap: float = USER_MIN_GAP
    application_window: float = APPLICATION_WINDOW
    application_max_requests: int = APPLICATION_MAX_REQUESTS
    _last_by_api_key: dict[str, float] = field(default_factory=dict)
    _recent_by_application_key: defaultdict[str, deque[float]] = field(
        default_factory=lambda: defaultdict(deque)
    )

    def attempt(self, api_key: str, application_key: str, now: float) -> bool:
        """Record an attempt at monotonic time `now`; return True if it is allowed."""
        last = self._last_by_api_key.get(api_key)
        user_ok = last is None or now - last >= self.user_min_gap

        recent = self._recent_by_application_key[application_key]
        while recent and now - recent[0] >= self.application_window:
            recent.popleft()
        application_ok = len(recent) < self.application_max_requests

        self._last_by_api_key[api_key] = now
        recent.append(now)

        return user_ok and application_ok
