"""Run the local Ambient API from the command line until SIGINT or SIGTERM.

    python -m local_api --port 8765 --api-key K --application-key A [--loop-days N]

The first line written to stdout is the origin the server listens on.
"""

import argparse
import asyncio
from datetime import timedelta
import logging
import signal
import sys

from .server import LocalAmbientServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m local_api",
        description="Serve recorded station data the way Ambient Weather's API does.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--application-key", required=True)
    parser.add_argument(
        "--loop-days",
        type=int,
        default=0,
        help="repeat the recording back in time to cover this many days",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Start the server, print its origin and wait for a stop signal."""
    server = LocalAmbientServer(
        [(args.api_key, args.application_key)],
        loop_span=timedelta(days=args.loop_days) if args.loop_days else None,
    )
    origin = await server.start(args.host, args.port)
    sys.stdout.write(origin + "\n")
    sys.stdout.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main() -> None:
    """Configure logging and run the server."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    asyncio.run(serve(parse_args()))


if __name__ == "__main__":
    main()
