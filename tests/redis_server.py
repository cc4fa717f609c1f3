"""A throwaway redis-server on loopback for tests and benchmarks.

``RedisServer`` starts ``redis-server`` on a free port with persistence off and its
working directory in a temporary folder, waits until it answers PING and stops it on
exit.  ``REDIS_SERVER`` is the binary, or ``None`` when it is not installed.  Test modules
import the ``redis_server`` fixture from here.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")
MISSING = "redis-server is not installed (apt-get install redis-server); Redis store tests need a real server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``with RedisServer() as server: server.port``; ``password`` starts it with ``--requirepass``."""

    def __init__(self, directory: str | Path | None = None, password: str | None = None) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError(MISSING)
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="redis-")
        self.directory = Path(directory or self._tmp.name)
        self.password = password
        self.host = "127.0.0.1"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # another process may take the free port before the server binds it
            self.port = free_port()
            args = [REDIS_SERVER, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
                    "--dir", str(self.directory), "--logfile", str(self.directory / f"redis-{self.port}.log")]
            if self.password:
                args += ["--requirepass", self.password]
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.directory}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    reply = s.recv(64)
                if reply.startswith((b"+PONG", b"-NOAUTH")):
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A redis-server for the whole test session; the test is skipped when the binary is absent."""
    if REDIS_SERVER is None:
        pytest.skip(MISSING)
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def make_store(request, tmp_path):
    """``make_store(kind, **settings)``: a serving store in a fresh namespace (Redis) or file (SQLite),
    closed after the test."""
    import uuid

    from lakeloop.serving import StoreSettings, store_from_config

    made = []

    def make(kind: str, **settings):
        if kind == "redis":
            server = request.getfixturevalue("redis_server")
            options = {"host": server.host, "port": server.port}
        else:
            options = {"path": str(tmp_path / "serving.sqlite")}
        namespace = settings.pop("namespace", "t" + uuid.uuid4().hex[:10])
        store = store_from_config(StoreSettings(kind, namespace, options=options, **settings))
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
