"""Input preparation shared by the neural-network backends (``torch``, ``tfos``, ``bigdl``).

:func:`feature_moments` gives the training means and standard deviations the networks standardise
with; :func:`holdout_arrays` the holdout as float32 arrays for per-epoch validation;
:func:`standardized_features` the standardised feature vector as a Spark column (missing values
become the mean, i.e. 0), for backends that read their input from a DataFrame column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from lakeloop.train.base import TrainingData

__all__ = ["feature_moments", "holdout_arrays", "standardized_features"]


def feature_moments(df: DataFrame, features: list[str]) -> tuple[list[float], list[float]]:
    """Per-feature mean and population standard deviation, ignoring null and NaN.

    An all-missing feature gets mean 0; a constant one standard deviation 1.
    """
    from pyspark.sql import functions as F

    values = {c: F.nanvl(F.col(c).cast("double"), F.lit(None).cast("double")) for c in features}
    row = df.agg(*[F.avg(v).alias(f"m{i}") for i, v in enumerate(values.values())],
                 *[F.stddev_pop(v).alias(f"s{i}") for i, v in enumerate(values.values())]).first()
    means = [float(row[f"m{i}"]) if row[f"m{i}"] is not None else 0.0 for i in range(len(features))]
    stds = [float(row[f"s{i}"]) if row[f"s{i}"] else 1.0 for i in range(len(features))]
    return means, stds


def holdout_arrays(data: TrainingData, max_rows: int, seed: int) -> tuple[Any, Any]:
    """The holdout as float32 arrays ``(x, y)`` (y with shape ``(n, 1)``), a seeded sample above ``max_rows``."""
    import numpy as np

    frame = data.valid.select(*data.features, data.label)
    total = frame.count()
    if total == 0:
        raise ValueError("the holdout is empty: per-epoch validation needs rows")
    if total > max_rows:
        frame = frame.sample(fraction=min(1.0, 1.1 * max_rows / total), seed=seed).limit(max_rows)
    pdf = frame.toPandas()
    return (pdf[data.features].to_numpy(dtype=np.float32),
            pdf[data.label].to_numpy(dtype=np.float32).reshape(-1, 1))


def standardized_features(features: list[str], means: list[float], stds: list[float]) -> Column:
    """``array<float>`` of ``(x - mean) / std`` per feature; null and NaN become 0 (the mean)."""
    from pyspark.sql import functions as F

    def one(name: str, mean: float, std: float) -> Column:
        x = F.nanvl(F.col(name).cast("double"), F.lit(None).cast("double"))
        return F.coalesce((x - F.lit(mean)) / F.lit(std), F.lit(0.0)).cast("float")

    return F.array(*[one(f, m, s) for f, m, s in zip(features, means, stds, strict=True)])
