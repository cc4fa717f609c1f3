"""A throwaway server process on loopback: a free port, started until it answers, stopped by its PID.

The test fixtures' servers (``tests/redis_server.py``, ``tests/kafka_broker.py``) subclass
:class:`ServerProcess` and give it two things: ``_launch`` (start the process on ``self.port``) and
``_answers`` (one readiness probe).  ``start`` retries on a new port when the process exits before it
answers (another process may take a free port before the server binds it); ``stop`` sends SIGTERM to the
PID, then SIGKILL after ``stop_timeout`` seconds.  Used as a context manager, a temporary working folder
made for it is removed on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def wait_or_kill(proc: subprocess.Popen, timeout: float) -> int:
    """``proc``'s exit code; a process (session) still running after ``timeout`` seconds is killed, the wait's
    ``TimeoutExpired`` raised."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 free at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """Base of the loopback servers: ``with Server() as server: server.host, server.port``."""

    name = "server"
    attempts = 3
    start_timeout = 15.0
    poll_interval = 0.05
    stop_timeout = 10.0

    def __init__(self, directory: str | Path | None = None, prefix: str = "server-") -> None:
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix=prefix)
        self.directory = Path(directory or self._tmp.name)
        self.host = "127.0.0.1"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def _launch(self) -> subprocess.Popen[bytes]:
        """Start the server process listening on ``self.host:self.port``."""
        raise NotImplementedError

    def _answers(self) -> bool:
        """One readiness probe: True once the server serves requests."""
        raise NotImplementedError

    def start(self, timeout: float | None = None):
        """Start the server and wait until it answers (``timeout`` seconds per attempt, else ``start_timeout``)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(self.attempts):
            self.port = free_port()
            self.process = self._launch()
            if self._wait_ready(self.start_timeout if timeout is None else timeout):
                return self
            self.stop()
        raise RuntimeError(f"{self.name} did not start; see {self.directory}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if self._answers():
                return True
            time.sleep(self.poll_interval)
        return False

    def stop(self) -> None:
        """Stop the process by its PID: SIGTERM (a clean shutdown), SIGKILL after ``stop_timeout``."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
