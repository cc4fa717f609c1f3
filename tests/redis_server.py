"""A throwaway redis-server on loopback for tests and benchmarks.

``RedisServer`` starts ``redis-server`` on a free port with persistence off and its
working directory in a temporary folder, waits until it answers PING and stops it by PID on
exit (:class:`tests.server_process.ServerProcess`).  ``REDIS_SERVER`` is the binary, or ``None``
when it is not installed.  Test modules import the ``redis_server`` fixture from here.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.server_process import ServerProcess

REDIS_SERVER = shutil.which("redis-server")
MISSING = "redis-server is not installed (apt-get install redis-server); Redis store tests need a real server"


class RedisServer(ServerProcess):
    """``with RedisServer() as server: server.port``; ``password`` starts it with ``--requirepass``."""

    name = "redis-server"
    attempts = 5

    def __init__(self, directory: str | Path | None = None, password: str | None = None) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError(MISSING)
        super().__init__(directory, prefix="redis-")
        self.password = password

    def _launch(self) -> subprocess.Popen[bytes]:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
                "--dir", str(self.directory), "--logfile", str(self.directory / f"redis-{self.port}.log")]
        if self.password:
            args += ["--requirepass", self.password]
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False


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
