"""Pin the GPU Spark assigned to the running task.

With ``gpu.enabled`` (conf) Spark gives every task ``spark.task.resource.gpu.amount`` GPUs and
reports their addresses through ``TaskContext.get().resources()["gpu"].addresses``.  A training
task must use exactly those devices, never ``cuda:0`` by habit: two tasks on one executor host
would otherwise share a GPU while another sits idle.  Without GPU scheduling the address list is
empty and every helper here answers "cpu", so the same task code runs on CPU.

The helpers take the address list explicitly (``addresses=None`` reads the running task's) so
they can be checked outside Spark.  See docs/gpu.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["task_gpu_addresses", "task_device", "xgboost_params", "torch_device", "tensorflow_env",
           "pin_tensorflow"]


def task_gpu_addresses() -> list[str]:
    """GPU addresses Spark assigned to the running task; empty on the driver or without GPUs."""
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return []
    gpu = context.resources().get("gpu")
    return [a.strip() for a in gpu.addresses] if gpu is not None else []


def _resolve(addresses: Sequence[str] | None) -> list[str]:
    return [a.strip() for a in (task_gpu_addresses() if addresses is None else addresses)]


def task_device(addresses: Sequence[str] | None = None) -> str:
    """``"cuda:<first address>"`` of the task's GPUs, or ``"cpu"`` when it has none.

    Single-device trainers (xgboost, one torch process per task) use the first address; with
    ``spark.task.resource.gpu.amount=1`` it is the only one.
    """
    found = _resolve(addresses)
    if not found:
        return "cpu"
    ordinal = found[0]
    if not ordinal.isdigit():
        raise ValueError(f"GPU address {ordinal!r} is not a device ordinal; check the discovery script")
    return f"cuda:{ordinal}"


def xgboost_params(addresses: Sequence[str] | None = None) -> dict[str, str]:
    """xgboost parameters pinning the task's GPU: ``{"device": "cuda:N"}`` or ``{"device": "cpu"}``."""
    return {"device": task_device(addresses)}


def torch_device(addresses: Sequence[str] | None = None) -> str:
    """The torch device string for the task (``"cuda:N"`` / ``"cpu"``).

    The ordinal is the physical one Spark reports, so ``CUDA_VISIBLE_DEVICES`` must not be
    narrowed in the same process (it would renumber devices from 0); use :func:`tensorflow_env`
    for frameworks that need narrowing instead.
    """
    return task_device(addresses)


def tensorflow_env(addresses: Sequence[str] | None = None) -> dict[str, str]:
    """Environment that makes TensorFlow see exactly the task's GPUs (none: CPU only).

    TensorFlow enumerates visible devices from 0, so inside the process the pinned GPU is
    ``/GPU:0`` whatever its physical address.
    """
    return {"CUDA_VISIBLE_DEVICES": ",".join(_resolve(addresses))}


def pin_tensorflow(addresses: Sequence[str] | None = None) -> dict[str, str]:
    """Apply :func:`tensorflow_env` to ``os.environ``; call before TensorFlow is imported."""
    env = tensorflow_env(addresses)
    os.environ.update(env)
    return env
