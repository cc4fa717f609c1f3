"""Refuse a job whose state would be lost or unreachable where its Spark processes run.

Where the driver and the executors run follows from ``spark.master`` and ``spark.submit.deployMode``
(:func:`placement`):

* ``local[...]`` or a standalone master on loopback: one host, every local path is fine.
* executors on other hosts (YARN, Kubernetes, a standalone master on a network address): the
  tables, the landing files, MLflow's artifacts and the serving store are touched by executors, so
  they must be on shared storage (an ``hdfs://`` or object-store URI, or a local path under one of
  ``deploy.shared_paths``, directories mounted at the same place on every host) and the serving
  store must be a server (Redis; a SQLite file in WAL mode works only within one host).
* the driver in a throw-away container (YARN or Kubernetes cluster deploy mode): MLflow's tracking
  and registry store, the pipeline's markers, lock and reports must outlive it as well: an MLflow
  server, or files on shared storage.

:func:`enforce` raises :class:`~lakeloop.conf.ConfError` (exit code 2) with one line per problem,
naming the key to set.  ``spark-submit.sh`` calls it before submitting and :func:`lakeloop.cli.run_job`
again in the driver.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from lakeloop.conf import Conf, ConfError, resolve_uri

__all__ = ["Placement", "placement", "is_shared", "problems", "enforce", "JOB_USES"]

# what each job touches; a job not listed is checked for everything
_ALL = frozenset({"tables", "landing", "mlflow", "serving", "state", "checkpoints"})
JOB_USES: dict[str, frozenset[str]] = {
    "datagen": frozenset({"tables", "landing"}),
    "ingest": frozenset({"tables", "landing"}),
    "curate": frozenset({"tables"}),
    "validate": frozenset({"tables"}),
    "features": frozenset({"tables"}),
    "train": frozenset({"tables", "mlflow"}),
    "infer": frozenset({"tables", "mlflow", "serving"}),
    "materialize": frozenset({"tables", "serving"}),
    "stream": frozenset({"tables", "landing", "serving", "checkpoints"}),
    "serve": frozenset({"serving"}),
    "serving": frozenset({"serving"}),
    "optimize": frozenset({"tables"}),
    "pipeline": _ALL,
    "demo": _ALL,
}
_LOOPBACK = re.compile(r"^(localhost|127(\.\d+){3}|\[?::1\]?)$", re.IGNORECASE)
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
_SERVER_SCHEMES = ("http", "https", "databricks", "postgresql", "mysql", "mssql", "uc")


@dataclass(frozen=True)
class Placement:
    """Where a job's Spark processes run: ``multi_host`` executors, a ``remote_driver``, and in words."""

    multi_host: bool
    remote_driver: bool
    where: str


def placement(conf: Conf) -> Placement:
    """The :class:`Placement` that ``spark.master`` and ``spark.submit.deployMode`` give."""
    master = str(conf["spark.master"])
    cluster_mode = conf.get("spark.submit.deployMode", "client") == "cluster"
    if master.startswith("local"):
        return Placement(False, False, f"master {master}")
    if master.startswith("spark://"):
        hosts = [h.rsplit(":", 1)[0] for h in master[len("spark://"):].split(",")]
        single = all(_LOOPBACK.match(h) for h in hosts)
        return Placement(not single, cluster_mode, f"standalone master {master}")
    kind = "YARN" if master == "yarn" else f"master {master}"
    return Placement(True, cluster_mode, f"{kind} {'cluster' if cluster_mode else 'client'} deploy mode")


def _shared_roots(conf: Conf) -> list[Path]:
    return [Path(resolve_uri(p)) for p in conf["deploy.shared_paths"]]


def is_shared(location: str, conf: Conf) -> bool:
    """True for a non-``file`` URI (HDFS, object stores) and for a local path under ``deploy.shared_paths``."""
    m = _SCHEME.match(location)
    if m and m.group(1).lower() != "file" and "://" in location:
        return True
    path = Path(resolve_uri(location))
    return any(path == root or root in path.parents for root in _shared_roots(conf))


def _is_local(location: str) -> bool:
    m = _SCHEME.match(location)
    return not (m and "://" in location) or m.group(1).lower() == "file"


SHARED_HINT = ("an hdfs:// or object-store URI, or a path under deploy.shared_paths (a directory mounted at the "
               "same place on every host)")


def _location_problems(conf: Conf, uses: frozenset[str], where: Placement) -> list[str]:
    out: list[str] = []
    locations = [("tables", "warehouse", conf.path("warehouse"), "tables, reports and job status files"),
                 ("landing", "landing", conf.path("landing"), "landing files")]
    if conf.get("stream.checkpoint_dir"):
        locations.append(("checkpoints", "stream.checkpoint_dir", conf.path("stream.checkpoint_dir"),
                          "streaming checkpoints"))
    for use, key, value, what in locations:
        if use in uses and not is_shared(value, conf):
            out.append(f"{key}: {value} ({what}) is local to each host; set {key} to {SHARED_HINT}")
    return out


def _mlflow_problems(conf: Conf, where: Placement) -> list[str]:
    from lakeloop.train import registry

    out: list[str] = []
    stores = [("mlflow.tracking_uri", registry.tracking_uri(conf))]
    if conf.get("mlflow.registry_uri"):
        stores.append(("mlflow.registry_uri", registry.registry_uri(conf)))
    for key, uri in stores:
        problem = _store_problem(uri, conf, where)
        if problem:
            also = "" if len(stores) > 1 else " (mlflow.registry_uri defaults to it)"
            out.append(f"{key}: {uri} {problem}; set {key}{also} to an MLflow server (http://host:5000) or a "
                       "sqlite:/// file under deploy.shared_paths")
    artifacts = registry.artifact_root(conf)
    if where.multi_host and _is_local(artifacts) and not is_shared(artifacts, conf):
        out.append(f"mlflow.artifact_root: {artifacts} is local to each host, executors load models from it; "
                   f"set mlflow.artifact_root to {SHARED_HINT} (or use an MLflow server that proxies artifacts)")
    return out


def _store_problem(uri: str, conf: Conf, where: Placement) -> str | None:
    """Why the MLflow store ``uri`` does not fit ``where`` (None when it does)."""
    scheme = (_SCHEME.match(uri).group(1).lower() if _SCHEME.match(uri) else "file")
    if scheme == "sqlite":
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        if "://" in path:
            return "is a SQLite file on a non-local filesystem, which SQLite cannot open"
        if where.remote_driver and not is_shared("/" + path.lstrip("/"), conf):
            return f"is a SQLite file on the driver's disk, discarded with its container ({where.where})"
        return None
    if scheme in _SERVER_SCHEMES:
        host = re.sub(r"^[a-z+]+://([^/:@]*@)?", "", uri).split("/", 1)[0].rsplit(":", 1)[0]
        if where.remote_driver and _LOOPBACK.match(host):
            return f"is a server on loopback, unreachable from a driver in the cluster ({where.where})"
        return None
    if where.remote_driver and _is_local(uri) and not is_shared(uri, conf):
        return f"is a file store on the driver's disk, discarded with its container ({where.where})"
    return None


def _serving_problems(conf: Conf, where: Placement) -> list[str]:
    store = conf["serving.store"]
    if store == "sqlite":
        from lakeloop.serving import _sqlite_path

        if where.multi_host:
            return [f"serving.store: sqlite works within one host only and {where.where} runs executors on many hosts "
                    "(they write the serving store); set serving.store=redis and serving.redis.host"]
        try:
            _sqlite_path(conf)
        except ConfError as exc:
            return [str(exc)]
        return []
    host = str(conf["serving.redis.host"])
    if not host:
        return ["serving.redis.host: not set; set it to the Redis server's address (conf/yarn.yaml reads "
                "LAKELOOP_REDIS_HOST)"]
    if where.multi_host and _LOOPBACK.match(host):
        return [f"serving.redis.host: {host} is loopback, every executor host would reach its own; set "
                "serving.redis.host to the Redis server's address"]
    return []


def _state_problems(conf: Conf, state_dir: str | None, where: Placement) -> list[str]:
    if not where.remote_driver:
        return []
    warehouse = conf.path("warehouse")
    state = state_dir or (warehouse.rstrip("/") + "/_state/pipeline" if _is_local(warehouse) else None)
    if state is not None and is_shared(state, conf):
        return []
    shown = state or "the default (<warehouse>/_state/pipeline, which must be a local path)"
    return [f"--state-dir: {shown} (pipeline markers, lock and reports) would be on the driver's disk, discarded "
            f"with its container ({where.where}); pass --state-dir under deploy.shared_paths"]


def problems(conf: Conf, job: str, state_dir: str | None = None) -> list[str]:
    """Every reason ``job`` with ``conf`` would lose or not reach its state; empty when it may run."""
    where = placement(conf)
    master = str(conf["spark.master"])
    if job == "serve" and master == "yarn":
        return ["serve is a plain Python service, not a YARN application: run it on a serving host that reaches "
                "the serving store, e.g. `./spark-submit.sh serve --env local --set serving.store=redis "
                "--set serving.redis.host=HOST` (docs/deploy.md)"]
    if job == "serve":
        return []
    out: list[str] = []
    if master.startswith("spark://") and where.remote_driver:
        out.append("spark.submit.deployMode: cluster is not supported by Spark for Python applications on a "
                   "standalone master; set spark.submit.deployMode=client")
    uses = JOB_USES.get(job, _ALL)
    if where.multi_host:
        out += _location_problems(conf, uses, where)
    if "mlflow" in uses:
        out += _mlflow_problems(conf, where)
    if "serving" in uses:
        out += _serving_problems(conf, where)
    if "state" in uses:
        out += _state_problems(conf, state_dir, where)
    return out


def enforce(conf: Conf, job: str, args: argparse.Namespace | None = None) -> None:
    """Raise :class:`ConfError` listing :func:`problems` (``args.state_dir`` is the pipeline's ``--state-dir``)."""
    found = problems(conf, job, getattr(args, "state_dir", None))
    if found:
        where = placement(conf)
        hint = "; client deploy mode keeps the driver on this host" if where.remote_driver and job != "serve" else ""
        raise ConfError(f"{job} refused ({where.where}):\n  - " + "\n  - ".join(found)
                        + f"\n  (checklist in docs/deploy.md{hint})")
