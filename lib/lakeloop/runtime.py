"""The two Python/Spark runtimes a job can run in, and what the Spark 3.5 side runtime needs.

Most jobs run in ``.venv`` on Spark 4.  BigDL DLlib has no Spark 4 (Scala 2.13) build, so the jobs that
use it run in a second, isolated runtime on Spark 3.5, ``.venv-spark35`` (``./setup.sh spark35``):

* ``train`` when its backend (``--backend`` or ``train.backend``) is one of ``runtime.spark35.backends``;
* ``infer`` when the model it scores (``--model-version`` or ``@champion``) has a flavour of such a
  backend (``bigdl``).

:func:`needs_spark35` makes that choice for :mod:`lakeloop.submit`; :func:`bigdl_properties` gives the
Spark properties that put BigDL's jars on the JVM classpath and replace BigDL's own log4j set-up (its
jar configures a file appender under ``/tmp/${sys:logFilename}`` and INFO on stdout) with
``resources/log4j2-spark35.properties``.  Nothing here imports pyspark or BigDL: it is used by the
Spark 4 runtime to launch the Spark 3.5 one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lakeloop.paths import project_root

if TYPE_CHECKING:
    from lakeloop.conf import Conf

__all__ = ["SPARK35", "SPARK4", "LOG4J_CONF", "needs_spark35", "spark35_python", "bigdl_jars",
           "bigdl_properties", "model_flavours", "arg_value"]

log = logging.getLogger(__name__)

SPARK4 = "spark4"
SPARK35 = "spark35"
LOG4J_CONF = Path(__file__).resolve().parent / "resources" / "log4j2-spark35.properties"
# MLflow flavour names of the backends that run in the Spark 3.5 runtime (backend name = flavour name)
_FLAVOUR_OF_BACKEND = {"bigdl": "bigdl"}


def arg_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``args`` (``--flag v`` or ``--flag=v``); None when absent."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def needs_spark35(conf: Conf, job: str, job_args: Sequence[str]) -> bool:
    """Whether ``job`` with ``job_args`` must run in the Spark 3.5 runtime (see the module docstring)."""
    backends = set(conf["runtime.spark35.backends"])
    if job == "train":
        return (arg_value(job_args, "--backend") or conf["train.backend"]) in backends
    if job == "infer":
        flavours = model_flavours(conf, arg_value(job_args, "--model-version"))
        return any(_FLAVOUR_OF_BACKEND.get(b, b) in flavours for b in backends)
    return False


def model_flavours(conf: Conf, version: str | None) -> tuple[str, ...]:
    """The MLflow flavours of ``mlflow.model_name`` at ``version`` (``@champion`` when None).

    Empty when the registry, the model or the version does not exist yet (``infer`` then reports
    that itself); nothing is created in the tracking store.
    """
    from lakeloop.train import registry

    uri = registry.registry_uri(conf)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return ()
    from mlflow.exceptions import MlflowException

    name = conf["mlflow.model_name"]
    try:
        client = registry.client(conf)
        mv = (client.get_model_version(name, str(version)) if version is not None
              else client.get_model_version_by_alias(name, registry.CHAMPION))
        return tuple(registry.model_info(client.get_model_version_download_uri(name, mv.version)).flavors)
    except MlflowException as exc:
        log.info("no model to pick a runtime from (%s): %s", name, exc.message)
        return ()


def spark35_python(conf: Conf, root: Path | None = None) -> Path:
    """The Spark 3.5 runtime's interpreter, ``runtime.spark35.python`` (relative: under the project)."""
    path = Path(conf["runtime.spark35.python"])
    return path if path.is_absolute() else (root or project_root()) / path


def bigdl_jars(python: Path) -> list[Path]:
    """BigDL's jars (dllib and core) inside the virtualenv of ``python`` (not resolved: venvs link it)."""
    venv = python.parent.parent
    return sorted(venv.glob("lib/python3*/site-packages/bigdl/share/*/lib/*.jar"))


def bigdl_properties(jars: Sequence[str | Path], base: Mapping[str, str], *, on_cluster: bool,
                     remote_driver: bool) -> dict[str, str]:
    """``base`` (the conf's Spark properties) plus what BigDL needs: its jars on the driver (and
    executor) classpath, lakeloop's log4j configuration, ``KMP_SETTINGS=0`` for the executors.

    Parameters
    ----------
    jars
        Local paths of the jars; on a cluster they are also shipped with ``--jars`` and found by
        their file name in the containers' working directories.
    base
        Spark properties; Java options already there are kept in front of the added ones.
    on_cluster, remote_driver
        A YARN/standalone/k8s master; a driver started in the cluster (``cluster`` deploy mode).
    """
    names = [Path(j).name for j in jars]
    props = dict(base)

    def java_options(key: str, log_conf: str) -> None:
        added = f"-Dlog4j2.configurationFile={log_conf} -DlogFilename=lakeloop-bigdl.log"
        props[key] = f"{props.get(key, '')} {added}".strip()

    props["spark.driver.extraClassPath"] = ":".join(names if remote_driver else [str(j) for j in jars])
    java_options("spark.driver.extraJavaOptions", LOG4J_CONF.name if remote_driver else str(LOG4J_CONF))
    props["spark.executorEnv.KMP_SETTINGS"] = "0"
    if on_cluster:
        props["spark.executor.extraClassPath"] = ":".join(names)
        java_options("spark.executor.extraJavaOptions", LOG4J_CONF.name)
    return props
