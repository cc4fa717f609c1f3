"""The ``torch`` backend: an MLP trained with DDP through Spark's ``TorchDistributor``.

``train.num_workers`` barrier tasks each run one torch process (``local_mode=False``; gloo on
CPU, nccl on GPU).  The training frame reaches them through ``TorchDistributor``'s DataFrame
input: it is repartitioned into one partition per process and every task receives its partition
as an Arrow file, which the process reads whole (the MLP's data is small next to its memory).
Partitions are not exactly even, so every process runs the same number of steps per epoch (the
largest partition's), cycling through its own rows.  The holdout (at most ``valid_max_rows``
rows, seeded sample) travels with the function arguments; after every epoch rank 0 evaluates it,
so ``history`` holds ``training-loss`` (mean over processes), ``validation-loss`` and the task's
metric (:mod:`lakeloop.train.heads`: ``validation-auc``, ``validation-rmse`` or
``validation-accuracy``) per epoch.

Tasks: ``binary``, ``regression`` and ``multiclass`` (:mod:`lakeloop.train.heads` gives the output
width and the loss: ``BCEWithLogitsLoss``, ``MSELoss``, ``CrossEntropyLoss``).  The network
standardises its inputs itself (buffers with the training means/standard deviations; missing
values, NaN, become the mean) and outputs logits (binary: one, multiclass: one per class); a
regression network ends in the inverse standardisation of the target (training mean/standard
deviation), so its last linear layer learns the standardised target and the network outputs the
value.  The logged MLflow model is a pyfunc wrapper around it whose ``predict`` returns the task's
prediction: the positive-class probability (sigmoid), the value, or an ``(n, classes)`` array of
class probabilities (softmax).

GPU: with ``gpu=True`` the distributor is started with ``use_gpu=True`` and each process pins
``cuda:<address>`` of the GPU Spark assigned to its task (:meth:`TorchBackend.device_params`,
:func:`lakeloop.train.gpu.torch_device`).

:func:`~lakeloop.train.prep.feature_moments` and :func:`~lakeloop.train.prep.holdout_arrays` are
shared with the ``tfos`` and ``bigdl`` backends.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakeloop.train import heads
from lakeloop.train.base import Backend, FitResult, TrainingData
from lakeloop.train.prep import feature_moments, holdout_arrays

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf

__all__ = ["TorchBackend", "BACKEND", "TorchModel", "build_network", "train_process"]

# the torch loss of each head loss (lakeloop.train.heads); the binary and multiclass ones take logits
_LOSSES = {"binary_crossentropy": "BCEWithLogitsLoss", "mean_squared_error": "MSELoss",
           "sparse_categorical_crossentropy": "CrossEntropyLoss"}


@dataclass
class TorchModel:
    """``FitResult.model`` of the torch backend: the trained network and the head it was trained with."""

    network: Any
    head: heads.Head


def build_network(means: list[float], stds: list[float], hidden: list[int], head: heads.Head | None = None,
                  target: tuple[float, float] = (0.0, 1.0)) -> Any:
    """The MLP (a ``torch.nn.Module``): standardise, NaN -> mean, ReLU hidden layers, ``head.units`` logits.

    A regression head ends in ``x * target_std + target_mean`` (``target``), so the network outputs the value.
    """
    import torch
    from torch import nn

    head = head or heads.head("binary")

    class Standardize(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(means, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(stds, dtype=torch.float32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nan_to_num((x - self.mean) / self.std, nan=0.0, posinf=0.0, neginf=0.0)

    class Destandardize(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(target[0], dtype=torch.float32))
            self.register_buffer("std", torch.tensor(target[1], dtype=torch.float32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.std + self.mean

    layers: list[nn.Module] = [Standardize()]
    width = len(means)
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    layers.append(nn.Linear(width, head.units))
    if head.task == "regression":
        layers.append(Destandardize())
    return nn.Sequential(*layers)


def _loss(head: heads.Head) -> Any:
    import torch

    return getattr(torch.nn, _LOSSES[head.loss])()


def _partition_arrays(features: list[str], label: str) -> tuple[Any, Any]:
    """This process's partition of the training frame (TorchDistributor's Arrow file) as float32 arrays."""
    import numpy as np
    import pyarrow as pa
    from pyspark.ml.torch.distributor import SPARK_PARTITION_ARROW_DATA_FILE

    with pa.memory_map(os.environ[SPARK_PARTITION_ARROW_DATA_FILE]) as source:
        table = pa.ipc.open_stream(source).read_all()
    x = np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in features])
    y = table.column(label).to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, 1)
    return x, y


def _epoch_steps(rows: int, batch_size: int, device: Any) -> int:
    """Steps per epoch, equal on every rank: the largest partition's batch count."""
    import torch
    import torch.distributed as dist

    steps = torch.tensor([max(1, -(-rows // batch_size))], device=device)
    dist.all_reduce(steps, op=dist.ReduceOp.MAX)
    return int(steps.item())


def _validate(model: Any, valid_x: Any, valid_y: Any, device: Any, head: heads.Head) -> tuple[float, float]:
    """The holdout's loss and the head's metric (``validation-<metric>``)."""
    import torch

    model.eval()
    with torch.no_grad():
        outputs = model(torch.from_numpy(valid_x).to(device))
        loss = _loss(head)(outputs, torch.from_numpy(heads.targets(head, valid_y)).to(device))
    model.train()
    return float(loss.item()), heads.validation_metric(head, valid_y, outputs.cpu().numpy(), logits=True)


def train_process(features: list[str], label: str, means: list[float], stds: list[float], hidden: list[int],
                  learning_rate: float, batch_size: int, epochs: int, seed: int, valid_x: Any, valid_y: Any,
                  use_gpu: bool, head: heads.Head, target: tuple[float, float]) -> dict[str, Any]:
    """The function every ``TorchDistributor`` process runs; rank 0's return value reaches the driver.

    Returns ``{"state_dict": ..., "history": ..., "device": ...}`` with the weights on CPU.
    """
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from lakeloop.train import gpu

    device = torch.device(BACKEND.device_params(gpu.torch_device() if use_gpu else "cpu")["device"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        rank = dist.get_rank()
        torch.manual_seed(seed)
        x, y = _partition_arrays(features, label)
        y = heads.targets(head, y)
        model = build_network(means, stds, hidden, head, target).to(device)
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = torch.optim.Adam(ddp.parameters(), lr=learning_rate)
        loss_fn = _loss(head)
        steps = _epoch_steps(len(x), batch_size, device)
        rng = np.random.default_rng(seed + rank)
        metric = f"validation-{head.metric}"
        history: dict[str, list[float]] = {"training-loss": [], "validation-loss": [], metric: []}
        for _ in range(epochs):
            order = np.resize(rng.permutation(len(x)), steps * batch_size)
            total = torch.zeros(2, device=device)
            for step in range(steps):
                idx = order[step * batch_size:(step + 1) * batch_size]
                xb, yb = torch.from_numpy(x[idx]).to(device), torch.from_numpy(y[idx]).to(device)
                optimizer.zero_grad()
                loss = loss_fn(ddp(xb), yb)
                loss.backward()
                optimizer.step()
                total += torch.stack([loss.detach() * len(idx), torch.tensor(float(len(idx)), device=device)])
            dist.all_reduce(total)
            history["training-loss"].append(float(total[0] / total[1]))
            if rank == 0:
                val_loss, val_metric = _validate(model, valid_x, valid_y, device, head)
                history["validation-loss"].append(val_loss)
                history[metric].append(val_metric)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return {"state_dict": state, "history": history, "device": str(device)}
    finally:
        dist.destroy_process_group()


@functools.cache
def _prediction_model_class() -> type:
    """The pyfunc wrapper class, built on first use: worker processes never import MLflow."""
    import mlflow.pyfunc

    class TorchPrediction(mlflow.pyfunc.PythonModel):
        """pyfunc wrapper: the task's prediction of the network's outputs for the feature columns."""

        def __init__(self, network: Any, head: heads.Head, features: list[str]) -> None:
            self.network = network.cpu().eval()
            self.head = head
            self.features = list(features)

        def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
            import numpy as np
            import torch

            x = torch.from_numpy(model_input[self.features].to_numpy(dtype=np.float32))
            with torch.no_grad():
                outputs = self.network(x).numpy()
            return heads.prediction(self.head, outputs, logits=True)

    return TorchPrediction


class TorchBackend(Backend):
    """An MLP trained in the cluster with TorchDistributor (DDP)."""

    name = "torch"
    tasks = ("binary", "regression", "multiclass")

    def default_params(self, conf: Conf) -> dict[str, Any]:
        return {"hidden": [32, 16], "learning_rate": 0.003, "batch_size": 64, "epochs": 3,
                "valid_max_rows": 20000, "seed": conf["train.seed"], "num_workers": conf["train.num_workers"]}

    def device_params(self, device: str) -> dict[str, Any]:
        return {"device": device}

    def fit(self, spark: SparkSession, data: TrainingData, params: dict[str, Any], *,
            gpu: bool = False) -> FitResult:
        from pyspark.ml.torch.distributor import TorchDistributor
        from pyspark.sql import functions as F

        processes = max(1, int(params["num_workers"]))
        seed = int(params["seed"])
        rows = data.train.count()
        if rows < processes:
            raise ValueError(f"{rows} training rows for {processes} torch processes: every process needs rows")
        head = heads.head(data.task, data.classes)
        target = heads.target_moments(data.train, data.label, data.task)
        means, stds = feature_moments(data.train, data.features)
        valid_x, valid_y = holdout_arrays(data, int(params["valid_max_rows"]), seed)
        cols = [F.col(c).cast("double") for c in data.features] + [F.col(data.label).cast("double")]
        frame = data.train.select(*cols).repartition(processes)
        hidden = [int(h) for h in params["hidden"]]
        distributor = TorchDistributor(num_processes=processes, local_mode=False, use_gpu=gpu)
        out = distributor._train_on_dataframe(
            train_process, frame, list(data.features), data.label, means, stds, hidden,
            float(params["learning_rate"]), int(params["batch_size"]), int(params["epochs"]), seed,
            valid_x, valid_y, gpu, head, target)
        network = build_network(means, stds, hidden, head, target)
        network.load_state_dict(out["state_dict"])
        history = {k: v for k, v in out["history"].items() if v}
        return FitResult(model=TorchModel(network, head), history=history,
                         params={**params, "num_workers": processes, "rank0_device": out["device"]})

    def log_model(self, result: FitResult, name: str, *, signature: ModelSignature,
                  input_example: pd.DataFrame) -> ModelInfo:
        features = [spec.name for spec in signature.inputs.inputs]
        import mlflow.pyfunc

        trained: TorchModel = result.model
        wrapper = _prediction_model_class()(trained.network, trained.head, features)
        return mlflow.pyfunc.log_model(name=name, python_model=wrapper, signature=signature,
                                       input_example=input_example)


BACKEND = TorchBackend()
