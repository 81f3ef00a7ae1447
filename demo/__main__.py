"""Run Home Assistant with ambient_weather against the local API, then backfill.

    python -m demo [--check] [--port 8123] [--days 30]

Steps: start the local Ambient API (Station A), write a fresh config directory
under .demo/, start Home Assistant, onboard it, confirm the trial http config,
add the integration through its config flow, back fill `--days` days and print
what arrived. Then keep Home Assistant running until Ctrl-C, or with --check
stop and exit 0 only if the backfill completed, statistics exist and the local
API never had to answer 429.
"""

import argparse
import asyncio
from dataclasses import dataclass
import fcntl
import logging
import os
from pathlib import Path
import signal
import socket
import sys
import time
from typing import Any

import aiohttp

from local_api import LocalAmbientServer

from .client import DemoError, HomeAssistantClient
from .hass import HomeAssistantProcess, frontend_available, prepare_config_dir
from .summary import (
    BackfillResult,
    StatisticSummary,
    format_backfill,
    format_statistic,
    pick_statistic,
    summarize_rows,
    traffic,
)

DOMAIN = "ambient_weather"
EVENT_FINISHED = "ambient_weather_backfill_finished"
# The pages a job may read past its start, and the one that is only partly in
# its range.
EXTRA_PAGES = 3
# Fixed fake keys: the local API accepts exactly these; they open nothing real.
DEMO_API_KEY = "d3m0a11ce0c0ffee5eed0f0e1d2c3b4a5968778695a4b3c2d1e0f0e1d2c3b4a5"
DEMO_APPLICATION_KEY = (
    "d3m0b0b5a1ad0d1e5e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f"
)
USERNAME = "demo"
PASSWORD = "ambient-demo"  # noqa: S105 - a throwaway local demo login, printed on purpose

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / ".demo"
INTEGRATION = REPO / "custom_components" / DOMAIN

STARTUP_TIMEOUT = 300
SETUP_TIMEOUT = 120
STATISTICS_TIMEOUT = 60


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument(
        "--check",
        action="store_true",
        help="stop after the summary; exit 0 only if everything worked",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("AMBIENT_DEMO_PORT", "8123")),
        help="Home Assistant's port on 127.0.0.1 (env AMBIENT_DEMO_PORT)",
    )
    parser.add_argument("--days", type=int, default=30, help="days to back fill")
    parser.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="seconds to wait for the backfill to finish",
    )
    return parser.parse_args()


def say(message: str = "") -> None:
    """Write one line of the demo's own output."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def port_is_free(port: int) -> bool:
    """Return True if nothing listens on 127.0.0.1:port."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(kw_only=True)
class Outcome:
    """What --check judges."""

    backfills: list[BackfillResult]
    statistics_found: bool
    rate_limited: int
    history_requests: int

    def problems(self) -> list[str]:
        """Return why the demo failed, or nothing if it worked."""
        problems = [
            f"backfill of {result.event.get('mac', '?')} ended {result.status}"
            for result in self.backfills
            if result.status != "completed"
        ]
        if not self.backfills:
            problems.append("no backfill finished")
        if not self.statistics_found:
            problems.append("no statistics of the integration in the recorder")
        if self.rate_limited:
            problems.append(f"the local API answered 429 {self.rate_limited} times")
        # Beyond the pages its records fill, a job reads a few past its start.
        needed = sum(r.pages_needed + EXTRA_PAGES for r in self.backfills)
        if self.history_requests > needed:
            problems.append(
                f"{self.history_requests} history requests for at most {needed} pages"
            )
        return problems


class Demo:
    """One demo run: the local API, Home Assistant and the steps between them."""

    def __init__(
        self, args: argparse.Namespace, session: aiohttp.ClientSession
    ) -> None:
        """Prepare the pieces; nothing starts yet."""
        self.args = args
        self.server = LocalAmbientServer([(DEMO_API_KEY, DEMO_APPLICATION_KEY)])
        self.hass = HomeAssistantProcess(
            DEMO_DIR / "config", DEMO_DIR / "home-assistant.out"
        )
        self.client = HomeAssistantClient(session, f"http://127.0.0.1:{args.port}")
        self.outcome: Outcome | None = None
        self.failure: str | None = None
        self._hass_started = asyncio.Event()

    async def start(self) -> None:
        """Start the local API and Home Assistant, then onboard and add the entry."""
        origin = await self.server.start()
        say(f"Local Ambient API: {origin} (Station A, recorded data shifted to now)")

        prepare_config_dir(
            self.hass.config_dir, port=self.args.port, integration=INTEGRATION
        )
        await self.hass.start({"AMBIENT_WEATHER_API_URL": origin})
        self._hass_started.set()
        # Relative: under scripts/setup the clone is mounted at /repo, a path
        # that means nothing outside the sandbox.
        config_dir = self.hass.config_dir.relative_to(REPO)
        say(f"Home Assistant starting, config in {config_dir} of this clone")
        if not frontend_available():
            say("  (home-assistant-frontend is not installed: REST and websocket only)")
        await self._until_up()

        await self.client.onboard("Demo Owner", USERNAME, PASSWORD)
        if (await self.client.get("/api/config")).get("recovery_mode"):
            raise DemoError("Home Assistant started in recovery mode")
        await self.client.connect_websocket()
        await self._confirm_http_config()

        await self._add_entry()

    async def _confirm_http_config(self) -> None:
        """Promote the trial http config so Home Assistant keeps it."""
        await self.client.command("http/config/promote")
        http = await self.client.command("http/config")
        if http.get("pending") is not None or http.get("revert_at") is not None:
            raise DemoError("the http config is still on trial after promotion")
        hosts = ", ".join(http["stable"].get("server_host") or ["all interfaces"])
        say(
            f"Onboarded; http config confirmed ({hosts} port "
            f"{http['stable'].get('server_port')}, no revert scheduled)"
        )

    async def _until_up(self) -> None:
        """Wait, within the startup timeout, for the HTTP API to answer."""
        async with asyncio.timeout(STARTUP_TIMEOUT):
            await self.client.wait_until_up()

    async def watch_hass(self, steps: asyncio.Task[None]) -> None:
        """Stop the steps when Home Assistant exits; before the report, as a failure."""
        await self._hass_started.wait()
        code = await self.hass.wait()
        if self.outcome is None:
            self.failure = f"Home Assistant exited with code {code}"
        else:
            say(f"Home Assistant exited with code {code}")
        steps.cancel()

    async def _add_entry(self) -> None:
        """Run the config flow with the demo keys and wait for the entry to load."""
        flow = await self.client.post(
            "/api/config/config_entries/flow", {"handler": DOMAIN}
        )
        if flow.get("type") != "form":
            raise DemoError(f"config flow did not show a form: {flow.get('type')}")
        result = await self.client.post(
            f"/api/config/config_entries/flow/{flow['flow_id']}",
            {"api_key": DEMO_API_KEY, "application_key": DEMO_APPLICATION_KEY},
        )
        if result.get("type") != "create_entry":
            raise DemoError(
                f"config flow ended {result.get('type')}: "
                f"{result.get('errors') or result.get('reason')}"
            )
        say(f"Keys accepted; config entry {result.get('title')!r} created")

        async with asyncio.timeout(SETUP_TIMEOUT):
            while True:
                entries = await self.client.command("config_entries/get", domain=DOMAIN)
                states = {entry["state"] for entry in entries}
                if states == {"loaded"}:
                    return
                if states & {"setup_error", "migration_error", "failed_unload"}:
                    raise DemoError(f"config entry state: {sorted(states)}")
                await asyncio.sleep(0.5)

    async def entities(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Return the integration's devices and its entities' states."""
        devices = [
            device
            for device in await self.client.command("config/device_registry/list")
            if any(identifier[0] == DOMAIN for identifier in device["identifiers"])
        ]
        registered = {
            entry["entity_id"]
            for entry in await self.client.command("config/entity_registry/list")
            if entry["platform"] == DOMAIN
        }
        states = [
            state
            for state in await self.client.get("/api/states")
            if state["entity_id"] in registered
        ]
        return devices, sorted(states, key=lambda state: state["entity_id"])

    async def backfill(
        self, stations: int
    ) -> tuple[list[BackfillResult], float, float]:
        """Call the backfill action and wait for one finished event per station."""
        events = await self.client.subscribe_events(EVENT_FINISHED)
        started = time.monotonic()
        await self.client.post(
            f"/api/services/{DOMAIN}/backfill", {"days": self.args.days}
        )
        say(f"Backfill of {self.args.days} days started for {stations} station(s)")
        results: list[BackfillResult] = []
        async with asyncio.timeout(self.args.timeout):
            while len(results) < stations:
                event = await events.get()
                seconds = time.monotonic() - started
                results.append(BackfillResult(event=event["data"], seconds=seconds))
        return results, started, time.monotonic()

    async def statistics(
        self, entity_ids: set[str], start: str, end: str
    ) -> dict[str, StatisticSummary | None]:
        """Summarize one temperature and one rain statistic of the recorder."""
        metadata = await self.client.command("recorder/list_statistic_ids")
        found: dict[str, StatisticSummary | None] = {}
        for kind in ("temperature", "rain"):
            statistic = pick_statistic(metadata, entity_ids, kind)
            if statistic is not None:
                rows = await self._rows(statistic["statistic_id"], start, end)
                found[kind] = summarize_rows(statistic, rows)
            else:
                found[kind] = None
        return found

    async def _rows(
        self, statistic_id: str, start: str, end: str
    ) -> list[dict[str, Any]]:
        """Return hourly rows, waiting a little for the recorder to commit them."""
        deadline = time.monotonic() + STATISTICS_TIMEOUT
        while True:
            result = await self.client.command(
                "recorder/statistics_during_period",
                start_time=start,
                end_time=end,
                statistic_ids=[statistic_id],
                period="hour",
                types=["mean", "min", "max", "sum", "state", "change"],
            )
            rows: list[dict[str, Any]] = result.get(statistic_id, [])
            if rows or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(2)

    async def stop(self) -> None:
        """Stop Home Assistant and the local API."""
        await self.client.close()
        await self.hass.stop()
        await self.server.stop()


async def report(demo: Demo) -> Outcome:
    """Run the backfill and print the summary; return what --check judges."""
    devices, states = await demo.entities()
    say()
    say(f"Stations: {len(devices)}")
    for device in devices:
        say(f"  {device.get('name_by_user') or device.get('name')} ({device['id']})")
    say(f"Entities of {DOMAIN}: {len(states)}")
    for state in states:
        unit = state["attributes"].get("unit_of_measurement") or ""
        say(f"  {state['entity_id']}: {state['state']} {unit}".rstrip())

    results, started, finished = await demo.backfill(max(len(devices), 1))
    served = traffic(demo.server.log, started, finished)
    names = {
        device["id"]: device.get("name_by_user") or device["name"] for device in devices
    }
    for result in results:
        name = names.get(result.event.get("device_id", ""), "station")
        say(f"Backfill of {name} ({result.event.get('mac', '?')}):")
        for line in format_backfill(result, served.history_during_backfill):
            say(f"  {line}")

    entity_ids = {state["entity_id"] for state in states}
    start = min(str(result.event.get("start")) for result in results)
    end = max(str(result.event.get("end")) for result in results)
    summaries = await demo.statistics(entity_ids, start, end)
    say("Statistics in the recorder over the backfilled range:")
    for kind, summary in summaries.items():
        say(f"  {format_statistic(summary) if summary else f'no {kind} statistic'}")
    found = all(summary and summary.rows for summary in summaries.values())
    say(
        "  (an hour without a record of a sensor's field gets no row: station A's "
        "outdoor sensor drops out for some hours)"
    )

    # The frontend builds its list of actions from this; when a core
    # integration fails to load its descriptions, the UI never finishes loading.
    actions = await demo.client.command("get_services")
    ours = sorted(actions.get(DOMAIN, {}))
    say(f"Actions the UI lists: {sum(map(len, actions.values()))}, ours: {ours}")

    say(
        f"Local API: {served.total} requests served, {served.rate_limited} answered "
        f"429; during the backfill {served.history_during_backfill} history and "
        f"{served.devices_during_backfill} device-list requests "
        f"(statuses {served.statuses_during_backfill})"
    )
    return Outcome(
        backfills=results,
        statistics_found=found,
        rate_limited=served.rate_limited,
        history_requests=served.history_during_backfill,
    )


async def run(args: argparse.Namespace) -> int:
    """Run the demo and return the process exit code."""
    if not port_is_free(args.port):
        say(f"demo: port {args.port} on 127.0.0.1 is in use; pass --port")
        return 2
    DEMO_DIR.mkdir(exist_ok=True)
    # Each run starts from an empty config directory: a second demo from the
    # same clone would delete the first one's database under it.
    lock = (DEMO_DIR / ".lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say("demo: another demo of this clone is running; stop it first")
        return 2
    (DEMO_DIR / ".gitignore").write_text("*\n")
    logging.basicConfig(
        filename=DEMO_DIR / "local_api.log",
        filemode="w",
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )

    async with aiohttp.ClientSession() as session:
        demo = Demo(args, session)
        steps = asyncio.create_task(run_steps(demo, args))
        watchdog = asyncio.create_task(demo.watch_hass(steps))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, steps.cancel)
        try:
            await steps
        except asyncio.CancelledError:
            if demo.failure is None and demo.outcome is None:
                say("demo: interrupted")
                return 130
        except (DemoError, TimeoutError) as err:
            demo.failure = str(err) or "timed out"
        finally:
            watchdog.cancel()
            say("Stopping Home Assistant and the local API")
            await demo.stop()

    return verdict(demo, check=args.check)


def verdict(demo: Demo, *, check: bool) -> int:
    """Print how the run went and return the exit code."""
    if demo.failure is not None or demo.outcome is None:
        say(f"demo: failed: {demo.failure}")
        say(f"Home Assistant output ({demo.hass.output}), last lines:")
        say(demo.hass.log_tail())
        return 1
    if problems := demo.outcome.problems():
        label = "check failed" if check else "problems seen"
        say(f"demo: {label}: " + "; ".join(problems))
        return 1
    say("demo: check passed" if check else "demo: done")
    return 0


async def run_steps(demo: Demo, args: argparse.Namespace) -> None:
    """Set everything up and report; in interactive mode then wait to be stopped."""
    await demo.start()
    demo.outcome = await report(demo)
    if not args.check:
        say()
        say(f"Home Assistant runs at {demo.client.origin}")
        say(f"Log in as {USERNAME!r} with password {PASSWORD!r}. Ctrl-C stops it.")
        await asyncio.Event().wait()


def main() -> None:
    """Entry point."""
    sys.exit(asyncio.run(run(parse_args())))


if __name__ == "__main__":
    main()
