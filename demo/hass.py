"""Prepare a throwaway Home Assistant config directory and run Home Assistant in it."""

import asyncio
import contextlib
import ctypes
import importlib.util
import os
from pathlib import Path
import shutil
import signal
from string import Template
import sys

TEMPLATE = Path(__file__).with_name("configuration.yaml")
PR_SET_PDEATHSIG = 1


def frontend_available() -> bool:
    """Return True if the frontend package is installed (it is not a test pin)."""
    return importlib.util.find_spec("hass_frontend") is not None


PLACEHOLDER_PAGE = """<!DOCTYPE html>
<html><head><title>Ambient Weather demo</title></head><body>
<p>The Home Assistant frontend package (home-assistant-frontend) is not installed
in this environment, so there is no user interface. This demo instance is driven
through the REST and websocket APIs.</p>
</body></html>
"""


def frontend_block(config_dir: Path) -> str:
    """Return the frontend configuration, with a placeholder if it is missing.

    Home Assistant starts in recovery mode (no custom integrations) when the
    frontend does not load, and the frontend imports the `hass_frontend` package
    unless `development_repo` points at a folder of frontend files. Without the
    package the demo points it at a folder holding one placeholder page.
    """
    if frontend_available():
        return "frontend:"
    placeholder = config_dir.parent / "frontend"
    files = placeholder / "hass_frontend"
    files.mkdir(parents=True, exist_ok=True)
    for name in ("index.html", "onboarding.html", "authorize.html"):
        (files / name).write_text(PLACEHOLDER_PAGE)
    return f"frontend:\n  development_repo: {placeholder.resolve()}"


def prepare_config_dir(config_dir: Path, *, port: int, integration: Path) -> None:
    """Create an empty config directory with our configuration and integration."""
    if config_dir.exists():
        shutil.rmtree(config_dir)
    (config_dir / "custom_components").mkdir(parents=True)
    text = Template(TEMPLATE.read_text()).substitute(
        port=port,
        config_dir=config_dir.resolve(),
        frontend=frontend_block(config_dir),
    )
    (config_dir / "configuration.yaml").write_text(text)

    # A relative link works wherever the repository is mounted.
    link = config_dir / "custom_components" / integration.name
    link.symlink_to(os.path.relpath(integration, link.parent))


def _die_with_parent() -> None:
    """Ask the kernel to stop Home Assistant if the demo itself dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class HomeAssistantProcess:
    """One `python -m homeassistant` child process."""

    def __init__(self, config_dir: Path, output: Path) -> None:
        """Remember where Home Assistant keeps its config and its console output."""
        self.config_dir = config_dir
        self.output = output
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, env: dict[str, str]) -> None:
        """Start Home Assistant; `--skip-pip` keeps it from installing anything."""
        with self.output.open("wb") as output:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "homeassistant",
                "--config",
                str(self.config_dir),
                "--skip-pip",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **env},
                # Not the repo root: `python -m` would put its custom_components
                # package on sys.path beside the config directory's copy.
                cwd=self.config_dir,
                preexec_fn=_die_with_parent,
            )

    @property
    def returncode(self) -> int | None:
        """Return the exit code, or None while it runs."""
        return None if self._process is None else self._process.returncode

    async def wait(self) -> int:
        """Wait for Home Assistant to exit and return its exit code."""
        if self._process is None:
            return 0
        return await self._process.wait()

    async def stop(self, grace: float = 60) -> int | None:
        """Ask Home Assistant to shut down, killing it if it takes too long."""
        if self._process is None or self._process.returncode is not None:
            return self.returncode
        with contextlib.suppress(ProcessLookupError):
            self._process.terminate()
        try:
            async with asyncio.timeout(grace):
                return await self._process.wait()
        except TimeoutError:
            self._process.kill()
            return await self._process.wait()

    def log_tail(self, lines: int = 25) -> str:
        """Return the last lines of Home Assistant's console output."""
        try:
            text = self.output.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
