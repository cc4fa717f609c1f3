"""The pipeline run lock: a JSON lock file (pid, host, start time, run id) that two runs never both hold.

Every change to the lock file (create, stale takeover, release) happens while holding an exclusive
``flock`` on a guard file beside it (``<lock>.guard``, never removed), so the check "is the holder
gone?" and the takeover are one atomic step: of several runs that find the same stale lock at once,
exactly one takes it over and the others see the new, live holder.  The lock file itself is created
with ``O_EXCL`` and replaced atomically (write to a unique temporary name, then ``os.replace``), so a
run that does not take the guard (an older lakeloop) still never sees a half-written lock.

A lock is stale only when its holder ran on this host and its pid no longer exists; a lock of another
host, or one that cannot be read, is never taken over.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lakeloop.errors import EXIT_USAGE, LakeloopError

__all__ = ["PipelineLocked", "RunLock", "pid_alive"]


class PipelineLocked(LakeloopError):
    """Another pipeline run of the same environment holds the lock."""

    exit_code = EXIT_USAGE


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class RunLock:
    """An exclusive run lock at ``path`` for ``run_id``; :attr:`stale` is the holder taken over, if any."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.stale: dict[str, Any] | None = None

    def holder(self) -> dict[str, Any] | None:
        """The lock file's content; None when there is none, ``{}`` when it cannot be read."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    @staticmethod
    def is_stale(holder: dict[str, Any]) -> bool:
        """A holder of this host whose process is gone."""
        pid = holder.get("pid")
        return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".guard"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _payload(self) -> str:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                           "run_id": self.run_id})

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self._payload())
        return True

    def _replace(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(self._payload(), encoding="utf-8")
        os.replace(tmp, self.path)

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; :class:`PipelineLocked` when another run holds it."""
        with self._guard():
            if self._create():
                return
            holder = self.holder()
            if holder is None:  # released between the create and the read
                if self._create():
                    return
                holder = self.holder() or {}
            if not holder or not self.is_stale(holder):
                raise PipelineLocked(f"pipeline lock {self.path} is held by {holder or 'an unreadable file'}; "
                                     "remove it only if that run is gone")
            self.stale = holder
            self._replace()

    def release(self) -> None:
        """Remove the lock file if this run holds it."""
        with self._guard():
            holder = self.holder()
            if holder and holder.get("run_id") == self.run_id and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)

    @contextmanager
    def held(self) -> Iterator[RunLock]:
        """``acquire`` ... ``release``."""
        self.acquire()
        try:
            yield self
        finally:
            self.release()
