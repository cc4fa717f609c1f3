"""MLflow tracking and model registry set up from conf; registry aliases.

Default (no server, no network): tracking and registry in one SQLite file
``<warehouse>/_mlflow/mlflow.db`` and artifacts under ``<warehouse>/_mlflow/artifacts``.  Any MLflow
server works through ``mlflow.tracking_uri`` / ``mlflow.registry_uri``.  Model versions are
addressed by aliases (``@challenger``: the newest trained version; ``@champion``: the version the
gate promoted), never by the deprecated stages.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from lakeloop.conf import resolve_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models import Model

    from lakeloop.conf import Conf

__all__ = ["CHALLENGER", "CHAMPION", "tracking_uri", "registry_uri", "artifact_root", "setup", "client",
           "register_challenger", "model_info", "version_for_alias", "alias_version", "model_uri", "log_history"]

CHALLENGER = "challenger"
CHAMPION = "champion"


def _mlflow_dir(conf: Conf) -> str:
    return f"{conf.path('warehouse').rstrip('/')}/_mlflow"


def tracking_uri(conf: Conf) -> str:
    """``mlflow.tracking_uri``, default ``sqlite:///<warehouse>/_mlflow/mlflow.db``."""
    return conf["mlflow.tracking_uri"] or f"sqlite:///{_mlflow_dir(conf)}/mlflow.db"


def registry_uri(conf: Conf) -> str:
    """``mlflow.registry_uri``, default: the tracking URI."""
    return conf["mlflow.registry_uri"] or tracking_uri(conf)


def artifact_root(conf: Conf) -> str:
    """Artifact location given to a newly created experiment."""
    root = conf.get("mlflow.artifact_root")
    return resolve_uri(root) if root else f"{_mlflow_dir(conf)}/artifacts"


def _ensure_sqlite_dir(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


def setup(conf: Conf) -> str:
    """Point the mlflow module at conf's tracking/registry URIs, create the experiment if needed.

    Returns the experiment id; later ``mlflow.start_run`` calls log into it.
    """
    import mlflow

    for uri in (tracking_uri(conf), registry_uri(conf)):
        _ensure_sqlite_dir(uri)
    mlflow.set_tracking_uri(tracking_uri(conf))
    mlflow.set_registry_uri(registry_uri(conf))
    name = conf["mlflow.experiment"]
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        root = artifact_root(conf)
        if "://" not in root:
            Path(root).mkdir(parents=True, exist_ok=True)
            root = Path(root).as_uri()
        experiment_id = mlflow.create_experiment(name, artifact_location=root)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def client(conf: Conf) -> MlflowClient:
    """A client bound to conf's tracking and registry URIs."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(conf), registry_uri=registry_uri(conf))


def model_info(artifact_uri: str) -> Model:
    """The :class:`mlflow.models.Model` (``MLmodel``) of the model whose artifacts are at ``artifact_uri``."""
    import tempfile

    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="lakeloop-mlmodel-") as tmp:
        return Model.load(download_artifacts(artifact_uri=f"{artifact_uri.rstrip('/')}/MLmodel", dst_path=tmp))


def model_uri(name: str, alias: str) -> str:
    return f"models:/{name}@{alias}"


def register_challenger(conf: Conf, source_uri: str, run_id: str, tags: dict[str, str]) -> str:
    """Register ``source_uri`` as a new version of ``mlflow.model_name``, move ``@challenger`` to it.

    Returns the version number as a string (stores differ: SQL stores answer ints, REST strings).
    """
    import mlflow

    name = conf["mlflow.model_name"]
    version = str(mlflow.register_model(source_uri, name, tags={"run_id": run_id, **tags}).version)
    client(conf).set_registered_model_alias(name, CHALLENGER, version)
    return version


def version_for_alias(conf: Conf, alias: str) -> ModelVersion | None:
    """The model version holding ``alias``; None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client(conf).get_model_version_by_alias(conf["mlflow.model_name"], alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def log_history(history: dict[str, list[float]]) -> None:
    """Log per-round/epoch metrics to the active run as metric steps (``validation-logloss`` ...)."""
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(key=name, value=float(v), timestamp=now, step=step)
               for name, values in history.items() for step, v in enumerate(values)]
    run_id = mlflow.active_run().info.run_id
    client = mlflow.MlflowClient()
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])


def alias_version(conf: Conf, alias: str) -> str | None:
    """The version number holding ``alias`` as a string; None when there is none."""
    found = version_for_alias(conf, alias)
    return None if found is None else str(found.version)
