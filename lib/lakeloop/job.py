"""The jobs lakeloop runs, and the one convention every job follows.

A job is a library module with::

    DESCRIPTION = "one line for --help"
    NEEDS_SPARK = True                                   # optional, default True

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(ctx: RunContext, spark: SparkSession | None, args: argparse.Namespace) -> JobResult: ...

:data:`JOBS` names the module of every job.  ``jobs/<name>.py`` (the spark-submit entry file), the
``lakeloop`` console script, the pipeline and the demo all reach a job through :func:`job_module`, never
through a file path.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Generic, TypeVar

__all__ = ["JOBS", "JobResult", "job_module", "job_names"]

T = TypeVar("T")

# job name -> library module holding DESCRIPTION, add_arguments and run
JOBS: dict[str, str] = {
    "datagen": "lakeloop.datagen.job",
    "ingest": "lakeloop.ingest",
    "curate": "lakeloop.curate",
    "validate": "lakeloop.validate",
    "features": "lakeloop.features",
    "train": "lakeloop.train.job",
    "infer": "lakeloop.infer",
    "stream": "lakeloop.streaming",
    "optimize": "lakeloop.optimize",
    "pipeline": "lakeloop.pipeline",
    "serve": "lakeloop.serve_api",
    "serving": "lakeloop.serving.admin",
    "demo": "lakeloop.demo",
}


@dataclass
class JobResult(Generic[T]):
    """What one run of a job did.

    Attributes
    ----------
    value : object
        The job's own result objects (per-source reports, the trained model's outcome...).
    summary : dict
        JSON-ready figures for the pipeline's run report and step markers.
    exit_code : int
        The process exit code the run ends with (:mod:`lakeloop.errors`); failures that raise are mapped
        by :mod:`lakeloop.cli` instead.
    """

    value: T | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0


def job_names() -> list[str]:
    """Every job, sorted."""
    return sorted(JOBS)


def job_module(name: str) -> ModuleType:
    """The library module of job ``name``; :class:`KeyError` for an unknown job."""
    return importlib.import_module(JOBS[name])
