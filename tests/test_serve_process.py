"""The ``serve`` job as a process, the way it runs in production: ``jobs/serve.py`` with two uvicorn worker
processes over a real SQLite store; graceful drain on SIGTERM, client disconnects without tracebacks,
metrics added up over the workers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lakeloop.serving import StoreSettings, store_from_config
from lakeloop_apps.recommender.serving import RecommenderClient as LookupClient

from tests.test_serve_api import labels, parse_metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def service(tmp_path):
    """``start(launcher, **conf)`` runs serve on a free port; yields ``start``, whose processes are stopped after."""
    store = store_from_config(StoreSettings("sqlite", "lakeloop", options={"path": str(tmp_path / "s.sqlite")}))
    store.begin_load("v1")
    store.write_batch("v1", [(i, [{"item_id": i, "score": 0.5}]) for i in range(100)])
    store.commit_load("v1", 100)
    started: list[subprocess.Popen] = []

    def start(launcher: list[str] | None = None, **conf: object) -> tuple[subprocess.Popen, int]:
        """``launcher`` (default: this Python running jobs/serve.py) followed by the serve options."""
        sets = {"serving.sqlite.path": tmp_path / "s.sqlite", "warehouse": tmp_path / "w", "landing": tmp_path / "l",
                "log_level": "INFO", **conf}
        cmd = [*(launcher or [sys.executable, str(ROOT / "jobs" / "serve.py")]), "--port", "0", "--workers", "2"]
        for key, value in sets.items():
            cmd += ["--set", f"{key}={value}"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "lib"), str(ROOT)]),
                   LAKELOOP_PYTHON=sys.executable)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        started.append(proc)
        line = proc.stdout.readline()
        assert "listening on" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        port = int(line.rsplit(":", 1)[1])
        _wait_ready(port)
        return proc, port

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    store.close()


def _wait_ready(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with LookupClient("127.0.0.1", port, timeout=5) as client:
                if all(client.get("/readyz")[0] == 200 for _ in range(10)):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the service did not become ready")


def _wait_refused(port: int, timeout: float = 15) -> None:
    """Until a new connection to ``port`` is refused: every worker has closed its listening socket."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError(f"the service still accepts connections {timeout:g} s after SIGTERM")


def test_sigterm_drains_requests_in_flight(service):
    proc, port = service(**{"serve.drain_timeout_s": 20})
    body = b'{"user_ids": [1, 2, 3]}'
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        # a request in flight: headers and half the body sent, then SIGTERM, then the rest
        s.sendall(b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%b" % (len(body), body[:10]))
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _wait_refused(port)  # every worker has begun to drain (uvicorn's supervisor polls signals every 0.5 s)
        s.sendall(body[10:])
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert b'"user_id":1' in reply and b"connection: close" in reply.lower()
    assert proc.wait(30) == 0
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr, stderr[-3000:]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_client_disconnects_leave_no_traceback(service):
    proc, port = service()
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:  # half wait for nothing and reset the connection right after the request
            s.sendall(b"GET /v1/recommendations/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (i % 100))
        else:  # the others break off in the middle of a body
            s.sendall(b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"user_")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
        s.close()
    with LookupClient("127.0.0.1", port) as client:
        assert client.recommendations(5)[0] == 200
        assert client.health()[0] == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr and "Error" not in stderr.replace("ERROR", ""), stderr[-3000:]


def test_every_worker_listens_on_a_socket_of_its_own(service):
    """Announced once both workers listen, each on its own SO_REUSEPORT socket (the parent only holds the
    port); keep-alive connections opened together are spread over the workers by the kernel."""
    from lakeloop.serving.server import _listeners

    proc, port = service()
    assert _listeners(port) == 2
    pids = set()
    for _ in range(5):
        clients = [LookupClient("127.0.0.1", port) for _ in range(8)]
        for client in clients:
            assert client.health()[0] == 200
        pids.update(_worker_pids(proc.pid) & _connected_pids(port))
        for client in clients:
            client.close()
    assert len(pids) == 2, pids
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def _connected_pids(port: int) -> set[int]:
    """The processes holding an accepted connection on ``port``."""
    import psutil

    return {c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port and c.raddr
            and c.status == psutil.CONN_ESTABLISHED and c.pid}


def _worker_pids(pid: int) -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process(pid).children(recursive=True)}


def test_metrics_add_up_over_the_worker_processes(service):
    proc, port = service()
    n = 60
    for _ in range(n):  # a new connection each time: the kernel spreads them over both workers
        with LookupClient("127.0.0.1", port) as client:
            assert client.recommendations(7)[0] == 200
    with LookupClient("127.0.0.1", port) as client:
        conn_text = _metrics_text(client)
    samples = parse_metrics(conn_text)
    assert samples["lakeloop_serve_requests_total", labels(route="/v1/recommendations/{user_id}", method="GET",
                                                           status="200")] == n
    assert samples["lakeloop_serving_version_info", labels(version="v1")] == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def _metrics_text(client: LookupClient) -> str:
    import http.client

    conn = http.client.HTTPConnection(client.host, client.port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def _descendants(pid: int) -> set[int]:
    """The PIDs of every process below ``pid`` (from /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(FileNotFoundError):
            for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
                found.add(int(child))
                todo.append(int(child))
    return found


def _alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(("launcher", "signum"), [("spark-submit.sh", signal.SIGTERM), ("lakeloop", signal.SIGINT)],
                         ids=["wrapper-SIGTERM", "console-SIGINT"])
def test_serve_stops_with_its_launcher(service, launcher, signum):
    """``./spark-submit.sh serve`` and ``lakeloop serve`` exec the server in place: the launcher's PID is the
    server's (no JVM, no wrapper left between), and a signal to the launcher stops it and its worker
    processes; nothing is left running or listening on the port."""
    script = ROOT / "spark-submit.sh" if launcher == "spark-submit.sh" else Path(sys.executable).parent / "lakeloop"
    assert script.is_file(), f"{script} not found (./setup.sh installs the console script)"
    proc, port = service(launcher=[str(script), "serve"])
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode().split("\0")
    assert cmdline[1] == str(ROOT / "jobs" / "serve.py"), cmdline
    children = _descendants(proc.pid)
    assert len(children) >= 2, children  # the two uvicorn workers (and multiprocessing's helpers)
    proc.send_signal(signum)
    assert proc.wait(30) == 0, proc.stderr.read()[-3000:]
    deadline = time.monotonic() + 10
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [c for c in children if _alive(c)], "worker processes outlived the launcher"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
