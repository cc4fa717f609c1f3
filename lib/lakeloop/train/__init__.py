"""In-cluster training, MLflow tracking and registry, and the evaluation gate.

One module per backend (``xgboost``; see :mod:`lakeloop.train.base` for the contract), and one
per concern: :mod:`~lakeloop.train.dataset` (a model's training rows), :mod:`~lakeloop.train.split`,
:mod:`~lakeloop.train.registry` (MLflow setup, aliases), :mod:`~lakeloop.train.gate`,
:mod:`~lakeloop.train.tuning`, :mod:`~lakeloop.train.report`, :mod:`~lakeloop.train.gpu`, and
:mod:`~lakeloop.train.run` which ties them together for ``jobs/train.py``.
"""

from lakeloop.train.base import Backend, FitResult, TrainingData, get_backend

__all__ = ["Backend", "FitResult", "TrainingData", "get_backend"]
