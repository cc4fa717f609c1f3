"""Peak resident memory of a job's processes, sampled while it runs, and the CPU a process tree used (shared by
the benchmarks that print them).

:class:`Peaks` follows one process (a job's driver Python), its Java child (the driver's JVM), its other
descendants (the driver's Python workers in local mode) and every executor JVM of a standalone worker with its
Python workers.
"""

from __future__ import annotations

import threading
import time

__all__ = ["Peaks", "GB", "tree_cpu"]

GB = 1024 ** 3


def tree_cpu(pid: int | None = None) -> float:
    """CPU seconds so far, user + system, of process ``pid`` (this one when None) and all its descendants."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


class Peaks:
    """Peak resident memory, sampled: a process, its Java child, its other descendants (sum), and the executor
    JVMs of a standalone worker with their descendants (sum)."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.pid, self.every_s = pid, every_s
        self.driver = self.jvm = self.workers = self.executors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                self.driver = max(self.driver, root.memory_info().rss)
                jvm, workers = 0, 0
                for child in root.children(recursive=True):
                    rss = _rss(child)
                    if _is_java(child):
                        jvm += rss
                    else:
                        workers += rss
                self.jvm, self.workers = max(self.jvm, jvm), max(self.workers, workers)
                self.executors = max(self.executors, _executors_rss())
            except psutil.NoSuchProcess:
                return
            time.sleep(self.every_s)


def _rss(proc) -> int:  # noqa: ANN001 - a psutil.Process
    import psutil

    try:
        return proc.memory_info().rss
    except psutil.NoSuchProcess:
        return 0


def _is_java(proc) -> bool:  # noqa: ANN001 - a psutil.Process
    import psutil

    try:
        return "java" in proc.name()
    except psutil.NoSuchProcess:
        return False


def _executors_rss() -> int:
    """The executor JVMs of standalone workers (``CoarseGrainedExecutorBackend``) and their Python workers."""
    import psutil

    total = 0
    for proc in psutil.process_iter(["cmdline"]):
        if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in (proc.info["cmdline"] or []):
            total += _rss(proc) + sum(_rss(c) for c in proc.children(recursive=True))
    return total
