"""The run lock: takeover of a stale lock by several runs at once gives the lock to exactly one."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lakeloop.pipeline import RunLock as PipelineRunLock
from lakeloop.runlock import PipelineLocked, RunLock

TRIALS = 200
CONTENDERS = 3


def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def write_stale(path: Path, pid: int) -> None:
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started_at": "2026-11-01T00:00:00+00:00",
                                "run_id": "old"}))


def _contend(path: str, run_id: str, barrier, results) -> None:
    lock = RunLock(Path(path), run_id)
    barrier.wait()
    try:
        lock.acquire()
    except PipelineLocked:
        results.put((run_id, False))
        return
    results.put((run_id, True))
    time.sleep(0.05)  # hold it while the others may still be trying
    lock.release()


def test_pipeline_module_still_exports_the_lock():
    assert PipelineRunLock is RunLock


def test_stale_takeover_race_gives_the_lock_to_exactly_one(tmp_path):
    """200 trials: a stale lock, three processes released at the same instant; one wins, never two."""
    ctx = multiprocessing.get_context("fork")
    path = tmp_path / "lock"
    stale = dead_pid()
    doubles, nobody = 0, 0
    for trial in range(TRIALS):
        write_stale(path, stale)
        barrier, results = ctx.Barrier(CONTENDERS), ctx.Queue()
        procs = [ctx.Process(target=_contend, args=(str(path), f"t{trial}-{i}", barrier, results))
                 for i in range(CONTENDERS)]
        for p in procs:
            p.start()
        outcome = [results.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        winners = sum(ok for _, ok in outcome)
        doubles += winners > 1
        nobody += winners == 0
        assert not path.exists(), "the winner released the lock"
    assert (doubles, nobody) == (0, 0)


def test_live_lock_is_never_taken_over(tmp_path):
    path = tmp_path / "lock"
    holder = RunLock(path, "holder")
    holder.acquire()
    try:
        with pytest.raises(PipelineLocked, match="held by"):
            RunLock(path, "second").acquire()
        assert json.loads(path.read_text())["run_id"] == "holder"
    finally:
        holder.release()
    assert not path.exists()


def test_unreadable_or_foreign_lock_is_never_taken_over(tmp_path):
    path = tmp_path / "lock"
    path.write_text("{not json")
    with pytest.raises(PipelineLocked, match="unreadable"):
        RunLock(path, "r").acquire()
    path.write_text(json.dumps({"pid": dead_pid(), "host": "another-host", "run_id": "x"}))
    with pytest.raises(PipelineLocked):
        RunLock(path, "r").acquire()


def test_stale_lock_is_taken_over_and_reported(tmp_path):
    path = tmp_path / "lock"
    pid = dead_pid()
    write_stale(path, pid)
    lock = RunLock(path, "new")
    with lock.held():
        assert lock.stale["pid"] == pid
        assert json.loads(path.read_text()) | {"started_at": ""} == {
            "pid": os.getpid(), "host": socket.gethostname(), "started_at": "", "run_id": "new"}
    assert not path.exists()


def test_release_leaves_a_lock_of_another_run(tmp_path):
    path = tmp_path / "lock"
    lock = RunLock(path, "mine")
    lock.acquire()
    path.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "run_id": "theirs"}))
    lock.release()
    assert json.loads(path.read_text())["run_id"] == "theirs"
