"""A job's exit code, written by its driver to shared storage so the launcher can return it.

In YARN (or Kubernetes) cluster deploy mode ``spark-submit`` exits 1 for any failed application, so
the scheduler would never see 2, 3 or 4.  ``spark-submit.sh`` therefore gives the driver
``LAKELOOP_STATUS_URI`` (``<warehouse>/_state/status/<app tag>.json``); :func:`reporting` wraps
:func:`lakeloop.cli.run_job` and writes ``{"job", "exit_code", "finished_at", "host"}`` there when the
outermost job of the process ends (a pipeline's steps do not overwrite the pipeline's own code), and
:func:`read_status` lets the launcher read it back after the application ended.

Local paths and ``file://`` URIs are written with plain file IO; other URIs go through Hadoop's
FileSystem of the driver's JVM (the configuration Spark itself uses for the warehouse) and are read
back with Hadoop's ``FsShell`` run by ``spark-class``.  ``FsShell`` loads its configuration in
non-quiet mode, so it fails with "core-site.xml not found" where none is on the classpath (the
pip-installed pyspark, a client without ``HADOOP_CONF_DIR``): :func:`_fs_shell` appends a folder with
an empty ``core-site.xml`` to the end of the classpath (``SPARK_DIST_CLASSPATH``), so a real one in
``HADOOP_CONF_DIR`` or ``SPARK_CONF_DIR`` still comes first.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["ENV_VAR", "status_uri", "reporting", "write_status", "read_status"]

ENV_VAR = "LAKELOOP_STATUS_URI"
_F = TypeVar("_F", bound=Callable[..., int])
_depth = 0


def status_uri(warehouse: str, tag: str) -> str:
    """``<warehouse>/_state/status/<tag>.json``."""
    return f"{warehouse.rstrip('/')}/_state/status/{tag}.json"


def _local_path(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    return None if "://" in uri else Path(uri)


def write_status(uri: str, job: str, code: int) -> None:
    """Write the status record of ``job`` ending with ``code`` to ``uri`` (atomically for local files)."""
    payload = json.dumps({"job": job, "exit_code": int(code), "host": socket.gethostname(),
                          "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}) + "\n"
    path = _local_path(uri)
    if path is None:
        _hadoop_write(uri, payload.encode())
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(payload, encoding="utf-8")
    os.replace(tmp, path)


def read_status(uri: str, spark_home: str | None = None) -> dict[str, Any] | None:
    """The status record at ``uri``, or None when there is none (the driver never got to write it).

    Raises :class:`OSError` when a non-local ``uri`` cannot be read for another reason than its absence.
    """
    path = _local_path(uri)
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
    else:
        text = _hadoop_read(uri, spark_home)
        if text is None:
            return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("exit_code"), int) else None


def remove_status(uri: str, spark_home: str | None = None) -> None:
    """Delete the status record once the launcher has read it."""
    path = _local_path(uri)
    if path is not None:
        path.unlink(missing_ok=True)
    else:
        _fs_shell(["-rm", "-f", uri], spark_home)


def _jvm() -> Any:
    """The driver's JVM: the active SparkContext's, or the gateway spark-submit started for this driver."""
    from pyspark import SparkContext

    if SparkContext._jvm is not None:  # noqa: SLF001 - py4j entry point of the running context
        return SparkContext._jvm  # noqa: SLF001
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        from pyspark.java_gateway import launch_gateway

        return launch_gateway().jvm
    raise OSError(f"cannot write {ENV_VAR}: no JVM (Hadoop FileSystem) in this process")


def _hadoop_write(uri: str, data: bytes, jvm: Any = None) -> None:
    jvm = jvm or _jvm()
    hadoop = jvm.org.apache.hadoop
    target = hadoop.fs.Path(uri)
    fs = target.getFileSystem(hadoop.conf.Configuration())
    tmp = hadoop.fs.Path(f"{uri}.{os.getpid()}.tmp")
    out = fs.create(tmp, True)
    try:
        out.write(bytearray(data))
    finally:
        out.close()
    fs.delete(target, False)
    if not fs.rename(tmp, target):
        raise OSError(f"could not rename {tmp} to {uri}")


def _spark_class(spark_home: str | None) -> str:
    home = spark_home or os.environ.get("SPARK_HOME")
    if not home:
        import pyspark

        home = str(Path(pyspark.__file__).resolve().parent)
    return str(Path(home) / "bin" / "spark-class")


EMPTY_CORE_SITE = '<?xml version="1.0"?>\n<configuration/>\n'


def _fs_shell(args: list[str], spark_home: str | None = None) -> subprocess.CompletedProcess:
    """``spark-class org.apache.hadoop.fs.FsShell ARGS``, with an empty ``core-site.xml`` last on the classpath."""
    with tempfile.TemporaryDirectory(prefix="lakeloop-hadoop-conf-") as fallback:
        Path(fallback, "core-site.xml").write_text(EMPTY_CORE_SITE, encoding="utf-8")
        dist = os.environ.get("SPARK_DIST_CLASSPATH")
        env = {**os.environ, "SPARK_DIST_CLASSPATH": os.pathsep.join(filter(None, [dist, fallback]))}
        return subprocess.run([_spark_class(spark_home), "org.apache.hadoop.fs.FsShell", *args], env=env,
                              capture_output=True, text=True, check=False)


def _hadoop_read(uri: str, spark_home: str | None = None) -> str | None:
    """The text at ``uri`` read with Hadoop's FsShell; None when there is no such file."""
    res = _fs_shell(["-cat", uri], spark_home)
    if res.returncode == 0:
        return res.stdout
    if "No such file or directory" in res.stderr:
        return None
    lines = [x for x in res.stderr.splitlines() if x.strip() and not x.startswith("WARNING: Using incubator")]
    raise OSError(f"FsShell -cat {uri} failed (exit code {res.returncode}): "
                  f"{lines[0] if lines else 'no message'}")


def reporting(run_job: _F) -> _F:
    """Decorate ``run_job(job, ...)``: write its exit code to ``$LAKELOOP_STATUS_URI`` when that is set.

    Only the outermost call of a process writes; argparse's ``SystemExit`` (``--help``, usage errors)
    is recorded too, then re-raised.
    """

    @functools.wraps(run_job)
    def wrapper(job: str, *args: Any, **kwargs: Any) -> int:
        global _depth
        _depth += 1
        code: int = 1
        try:
            code = run_job(job, *args, **kwargs)
            return code
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
            raise
        finally:
            _depth -= 1
            uri = os.environ.get(ENV_VAR)
            if uri and _depth == 0:
                _record(uri, job, code)

    return wrapper  # type: ignore[return-value]


def _record(uri: str, job: str, code: int) -> None:
    import logging

    try:
        write_status(uri, job, code)
    except Exception as exc:  # noqa: BLE001 - the job's own outcome matters more than its status file
        logging.getLogger("lakeloop.job_status").error("could not write the job status to %s: %s", uri, exc)
