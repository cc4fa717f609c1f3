"""The ``bigdl`` MLflow flavour: a BigDL Keras-style MLP in BigDL's own format plus a pyfunc that scores it.

A logged model directory holds

``bigdl/model.bigdl``
    the trained network saved by BigDL (``KerasNet.saveModel``), loaded back with
    :func:`load_bigdl` (``bigdl.dllib.keras.models.load_model``) in the Spark 3.5 runtime; bulk
    inference scores with it there (:mod:`lakeloop.infer`).
``network/network.json`` and ``network/weights.npz``
    the feature names, the standardisation (training means and standard deviations), the layer
    activations, the task and the target's standardisation (``target``: the training mean and
    standard deviation a regression network's output is de-standardised with; ``[0, 1]``
    otherwise), and the same network's weights (``get_weights``: per dense layer ``W`` of shape
    ``(out, in)`` and ``b``).  The pyfunc flavour (this module as ``loader_module``) computes the
    network's forward pass from them with numpy, so the evaluation gate, serving and any runtime
    (Spark 4 included, where BigDL cannot load) score the model without BigDL or a JVM.  A test
    checks that it gives BigDL's own predictions.

The pyfunc's ``predict`` returns the task's prediction (:func:`lakeloop.train.heads.prediction`): the
positive-class probability or the value.  A model saved without ``task`` is binary.

This module imports numpy (and :mod:`lakeloop.train.heads`) only; BigDL and MLflow are imported where
they are used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lakeloop.train import heads

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import Model, ModelSignature

__all__ = ["FLAVOR_NAME", "BIGDL_FILE", "NETWORK_DIR", "save_model", "load_bigdl", "NetworkScorer",
           "forward"]

FLAVOR_NAME = "bigdl"
BIGDL_FILE = "bigdl/model.bigdl"
NETWORK_DIR = "network"


def forward(x: np.ndarray, weights: list[np.ndarray], activations: list[str]) -> np.ndarray:
    """The dense network's output for already standardised inputs ``x`` (rows x features)."""
    if len(weights) != 2 * len(activations):
        raise ValueError(f"{len(weights)} weight arrays for {len(activations)} dense layers")
    out = x
    for i, name in enumerate(activations):
        out = heads.activate(name, out @ weights[2 * i].T + weights[2 * i + 1])
    return out


class NetworkScorer:
    """The pyfunc model: the task's prediction for a frame holding the feature columns."""

    def __init__(self, data_path: str | Path) -> None:
        folder = Path(data_path)
        spec = json.loads((folder / "network.json").read_text())
        with np.load(folder / "weights.npz") as npz:
            self.weights = [npz[f"arr_{i}"].astype(np.float64) for i in range(len(npz.files))]
        self.features: list[str] = spec["features"]
        self.means = np.asarray(spec["means"], dtype=np.float64)
        self.stds = np.asarray(spec["stds"], dtype=np.float64)
        self.activations: list[str] = spec["activations"]
        unknown = sorted(set(self.activations) - set(heads.ACTIVATIONS))
        if unknown:
            raise ValueError(f"{folder}: unknown activations {unknown}")
        self.head = heads.head(spec.get("task", "binary"), len(self.weights[-1]))
        mean, std = spec.get("target", (0.0, 1.0))
        self.target = (float(mean), float(std))

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        missing = [c for c in self.features if c not in model_input.columns]
        if missing:
            raise ValueError(f"model input lacks feature columns {', '.join(missing)}")
        x = model_input[self.features].to_numpy(dtype=np.float64, na_value=np.nan)
        z = np.nan_to_num((x - self.means) / self.stds, nan=0.0, posinf=0.0, neginf=0.0)
        return heads.prediction(self.head, forward(z, self.weights, self.activations), target=self.target)


def _load_pyfunc(data_path: str) -> NetworkScorer:
    """MLflow's pyfunc entry point (``loader_module``)."""
    return NetworkScorer(data_path)


def save_model(path: str | Path, mlflow_model: Model, *, bigdl_model: Any, features: list[str],
               means: list[float], stds: list[float], activations: list[str], task: str = "binary",
               target: list[float] | None = None, signature: ModelSignature | None = None,
               input_example: pd.DataFrame | None = None, **_: Any) -> None:
    """Write the model directory described in the module docstring (called by ``Model.log``).

    ``bigdl_model`` is the trained BigDL Keras-style model (its JVM must be running).
    """
    import mlflow.pyfunc
    from mlflow.models.utils import _save_example

    folder = Path(path)
    (folder / NETWORK_DIR).mkdir(parents=True, exist_ok=True)
    (folder / BIGDL_FILE).parent.mkdir(parents=True, exist_ok=True)
    bigdl_model.saveModel(str(folder / BIGDL_FILE), over_write=True)
    np.savez(folder / NETWORK_DIR / "weights.npz", *[np.asarray(w) for w in bigdl_model.get_weights()])
    spec = {"features": list(features), "means": list(means), "stds": list(stds),
            "activations": list(activations), "task": task, "target": list(target or (0.0, 1.0))}
    (folder / NETWORK_DIR / "network.json").write_text(json.dumps(spec, indent=1))
    if signature is not None:
        mlflow_model.signature = signature
    if input_example is not None:
        _save_example(mlflow_model, input_example, str(folder))
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module=__name__, data=NETWORK_DIR)
    mlflow_model.add_flavor(FLAVOR_NAME, bigdl_version=_bigdl_version(), model_file=BIGDL_FILE,
                            network=NETWORK_DIR)
    mlflow_model.save(str(folder / "MLmodel"))


def _bigdl_version() -> str:
    from importlib.metadata import version

    return version("bigdl-dllib-spark3")


def load_bigdl(model_dir: str | Path) -> Any:
    """The BigDL network of a logged model directory (a local path); needs BigDL's JVM (Spark 3.5)."""
    from bigdl.dllib.keras.models import load_model

    return load_model(str(Path(model_dir) / BIGDL_FILE))
