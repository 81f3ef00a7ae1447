"""Faults a test can ask the local server to inject into its next responses."""

from dataclasses import dataclass

NGINX_503_PAGE = """<html>
<head><title>503 Service Temporarily Unavailable</title></head>
<body>
<center><h1>503 Service Temporarily Unavailable</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""

DEFAULT_BODIES: dict[int, tuple[str, str]] = {
    429: ('{"error":"above-user-rate-limit"}', "application/json"),
    503: (NGINX_503_PAGE, "text/html"),
}
FALLBACK_BODY = ('{"error":"unknown-error"}', "application/json")


@dataclass(kw_only=True)
class Fault:
    """Answer the next `remaining` matching requests with a canned error."""

    status: int
    body: str
    content_type: str
    remaining: int
    path_prefix: str | None = None


@dataclass(kw_only=True)
class Delay:
    """Hold the next `remaining` matching responses back for `seconds`."""

    seconds: float
    remaining: int
    path_prefix: str | None = None


def take[T: (Fault, Delay)](pending: list[T], path: str) -> T | None:
    """Use up one turn of the first pending entry that matches `path`."""
    for entry in pending:
        if entry.path_prefix is None or path.startswith(entry.path_prefix):
            entry.remaining -= 1
            if entry.remaining <= 0:
                pending.remove(entry)
            return entry
    return None
