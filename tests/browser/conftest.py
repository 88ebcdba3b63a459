"""Browser tests: Playwright drives Debian's Chromium against ``segdash serve``.

The server is started by the tests on a free loopback port (one per test module) and stopped
by its process id. Chromium is found through ``SEGDASH_CHROMIUM`` or at /usr/bin/chromium;
when neither exists the tests fail (``make test`` installs it), they are never skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Where Debian installs Chromium; SEGDASH_CHROMIUM overrides it.
DEFAULT_CHROMIUM = "/usr/bin/chromium"
#: Flags that keep Chromium quiet and offline-friendly in containers.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SERVER_START_SECONDS = 60


def chromium_path() -> str:
    """The Chromium executable, or a test failure saying how to get one."""
    path = os.environ.get("SEGDASH_CHROMIUM") or DEFAULT_CHROMIUM
    found = shutil.which(path) or (path if Path(path).is_file() else None)
    if not found:
        pytest.fail(
            f"Chromium not found at {path!r}: install it (`make browser`, or "
            "`apt-get install chromium`) or set SEGDASH_CHROMIUM. Browser tests are not skipped.",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """pytest-playwright's launch options, pointed at Debian's Chromium."""
    return {**browser_type_launch_args, "executable_path": chromium_path(),
            "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000},
            "accept_downloads": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args: str, log_path: Path, env: dict[str, str] | None = None,
                 port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``segdash serve ARGS`` on a free loopback port; return the process and its URL.
    ``env``: the server's environment (default: this process's)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "segdash.cli", "serve", *args, "--port", str(port),
           "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}"]
    log = open(log_path, "w")  # noqa: SIM115  (closed with the process)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    # Probe a static file: a GET of the app itself would open (and leave) a session.
    probe = urllib.request.Request(url + "static/js/bokeh.min.js", method="HEAD")
    deadline = time.monotonic() + SERVER_START_SECONDS
    while True:
        if proc.poll() is not None:
            log.close()
            pytest.fail(f"segdash serve exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(probe, timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_server(proc)
            pytest.fail(f"segdash serve did not answer within {SERVER_START_SECONDS} s:\n"
                        f"{log_path.read_text()}")
        time.sleep(0.2)
    proc.log = log  # type: ignore[attr-defined]
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server started by :func:`start_server` (by its PID only)."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)
    log = getattr(proc, "log", None)
    if log is not None:
        log.close()


@contextlib.contextmanager
def serving(log_path: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
            ) -> Iterator[str]:
    """Run ``segdash serve ARGS`` for the block, yielding its URL; print its log if it
    crashed."""
    proc, url = start_server(*args, log_path=log_path, env=env)
    try:
        yield url
    finally:
        stop_server(proc)
        text = log_path.read_text()
        if "Traceback" in text:
            print(f"--- segdash serve log ({log_path}) ---\n{text}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a ``segdash serve`` on the default sample, shared by one test module."""
    with serving(tmp_path_factory.mktemp("server") / "serve.log") as url:
        yield url


@pytest.fixture
def console(page) -> Iterator[list[tuple[str, str, str]]]:
    """The page's console errors and uncaught exceptions as ``(kind, text, url)``; printed
    after every test."""
    seen: list[tuple[str, str, str]] = []
    page.on("console", lambda m: seen.append((m.type, m.text, m.location.get("url", "")))
            if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.append(("pageerror", str(e), "")))
    yield seen
    for kind, text, url in seen:
        print(f"console {kind}: {text} ({url})")
