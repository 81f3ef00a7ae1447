"""The local Ambient API in a child process, so its work stays out of our figures.

The benchmark measures CPU and event-loop stalls inside Home Assistant's process.
A server on the same loop (or in a thread of the same process) would add its own
page building and JSON encoding to both, while the real API runs elsewhere. So it
runs here, as `python -m benchmarks.api_process`, and talks over pipes:

- its first line on stdout is the origin it listens on;
- each line `log` on stdin is answered with one JSON line: every request so far as
  `[arrival, path, status]`, the arrival on the monotonic clock, which Linux
  shares between processes;
- the end of stdin stops it.
"""

import argparse
import asyncio
from dataclasses import dataclass
from datetime import timedelta
import json
import subprocess
import sys

from local_api import LocalAmbientServer

STOP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Served:
    """One request the child's server answered."""

    arrival: float
    path: str
    status: int


class ApiServerProcess:
    """Run the local Ambient API in a child process and read its request log."""

    def __init__(self, api_key: str, application_key: str, loop_days: int) -> None:
        """Remember how to start the server; nothing runs yet."""
        self._args = [
            "--api-key",
            api_key,
            "--application-key",
            application_key,
            "--loop-days",
            str(loop_days),
        ]
        self._process: subprocess.Popen[str] | None = None
        self.origin = ""

    def start(self) -> str:
        """Start the child and return the origin it listens on."""
        self._process = subprocess.Popen(  # noqa: S603 - our own module and args
            [sys.executable, "-m", "benchmarks.api_process", *self._args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        if not (origin := self._process.stdout.readline().strip()):
            raise RuntimeError("The local Ambient API did not start")
        self.origin = origin
        return origin

    def log(self) -> list[Served]:
        """Return every request the server has answered so far (blocking)."""
        assert self._process is not None
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write("log\n")
        self._process.stdin.flush()
        rows = json.loads(self._process.stdout.readline())
        return [Served(*row) for row in rows]

    def stop(self) -> None:
        """Stop the child, killing it if it does not exit in time."""
        if self._process is None or self._process.poll() is not None:
            return
        try:
            self._process.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.communicate()


async def _serve(args: argparse.Namespace) -> None:
    """Serve until stdin ends, answering `log` requests on the way."""
    server = LocalAmbientServer(
        [(args.api_key, args.application_key)],
        loop_span=timedelta(days=args.loop_days),
    )
    sys.stdout.write(await server.start() + "\n")
    sys.stdout.flush()
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            if line.strip() == "log":
                rows = [[s.monotonic, s.path, s.status] for s in server.log]
                sys.stdout.write(json.dumps(rows) + "\n")
                sys.stdout.flush()
    finally:
        await server.stop()


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api_process")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--application-key", required=True)
    parser.add_argument("--loop-days", type=int, required=True)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
