"""Range checks of configuration values and a YAML loader that refuses duplicate keys.

:func:`check_ranges` runs after every key has its declared type (:func:`lakeloop.conf._check_type`):
each entry of :data:`CHECKS` maps a key (``*`` matches one key segment) to a predicate and the range
it stands for; a non-nullable ``size`` key that is set (also to
nothing: ``--set spark.executor.memory=``) must parse and be above zero.  A value
out of range is a :class:`lakeloop.conf.ConfError` (exit code 2) naming the file that set it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["Check", "CHECKS", "UniqueKeyLoader", "check_ranges", "size_bytes"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def size_bytes(value: Any) -> int | None:
    """Bytes of a JVM memory size (``512m``, ``4g``, ``1048576``); None when it does not parse."""
    match = _SIZE.match(str(value)) if value is not None and not isinstance(value, bool) else None
    if match is None:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class Check:
    """A predicate over a typed value and the range it stands for (used in the error message)."""

    ok: Callable[[Any], bool]
    expected: str


def _between(lo: float, hi: float) -> Check:
    return Check(lambda v: lo <= v <= hi, f"a number in [{lo:g}, {hi:g}]")


def _at_least(lo: int) -> Check:
    return Check(lambda v: v >= lo, f"at least {lo}")


POSITIVE = _at_least(1)
NON_NEGATIVE = _at_least(0)
RATE = _between(0.0, 1.0)
PORT = Check(lambda v: 1 <= v <= 65535, "a port in 1-65535")
ABOVE_ZERO = Check(lambda v: v > 0, "a number above 0")
OPEN_FRACTION = Check(lambda v: 0 < v < 1, "a number strictly between 0 and 1")

# key -> check; a null value (where the key allows it) is not checked
CHECKS: dict[str, Check] = {
    "spark.driver.cores": POSITIVE,
    "spark.executor.cores": POSITIVE,
    "spark.executor.instances": POSITIVE,
    "spark.cores.max": POSITIVE,
    "spark.dynamicAllocation.minExecutors": NON_NEGATIVE,
    "spark.dynamicAllocation.maxExecutors": POSITIVE,
    "spark.dynamicAllocation.initialExecutors": NON_NEGATIVE,
    "spark.sql.shuffle.partitions": POSITIVE,
    "spark.sql.execution.arrow.maxRecordsPerBatch": POSITIVE,
    "spark.yarn.maxAppAttempts": POSITIVE,
    "gpu.executor_amount": NON_NEGATIVE,
    "gpu.task_amount": ABOVE_ZERO,
    "delta.vacuum_retention_hours": NON_NEGATIVE,
    "delta.target_file_size": POSITIVE,
    "curate.max_quarantine_rate": RATE,
    "validate.psi_threshold": ABOVE_ZERO,
    "validate.bins": POSITIVE,
    "validate.top_k": POSITIVE,
    "validate.max_categories": POSITIVE,
    "features.lookback_days": POSITIVE,
    "features.max_list_length": POSITIVE,
    "features.half_life_days": ABOVE_ZERO,
    "features.label_window_days": POSITIVE,
    "features.negatives_per_positive": NON_NEGATIVE,
    "serving.keep_versions": POSITIVE,
    "serving.ttl_seconds": POSITIVE,
    "serving.batch_size": POSITIVE,
    "serving.redis.port": PORT,
    "serving.redis.db": NON_NEGATIVE,
    "train.days": POSITIVE,
    "train.holdout_fraction": OPEN_FRACTION,
    "train.num_workers": POSITIVE,
    "train.gate_max_rows": POSITIVE,
    "train.infra_check_rows": POSITIVE,
    "train.tune_sample_rows": POSITIVE,
    "infer.candidates_per_user": POSITIVE,
    "infer.categories_per_user": POSITIVE,
    "infer.top_n": POSITIVE,
    "infer.batch_size": POSITIVE,
    "infer.fail_partition": NON_NEGATIVE,
    "stream.max_files_per_trigger": POSITIVE,
    "stream.realtime_ttl_seconds": POSITIVE,
    "datagen.events": NON_NEGATIVE,
    "datagen.users": POSITIVE,
    "datagen.items": POSITIVE,
    "datagen.bad_fraction": RATE,
}


def _check_for(key: str) -> Check | None:
    if key in CHECKS:
        return CHECKS[key]
    for pattern, check in CHECKS.items():
        if "*" in pattern and fnmatch.fnmatchcase(key, pattern) and key.count(".") == pattern.count("."):
            return check
    return None


def check_ranges(values: Mapping[str, Any], origins: Mapping[str, str], spec: Mapping[str, Any],
                 error: type[Exception] = ValueError) -> None:
    """Raise ``error`` (:class:`lakeloop.conf.ConfError` from :mod:`lakeloop.conf`) for the first value outside
    its range.

    Parameters
    ----------
    values, origins : mapping
        Typed values and the file (or ``--set``) each came from.
    spec : mapping
        :data:`lakeloop.conf.SPEC`: a non-nullable ``size`` key that is set must parse and be above zero.
    """
    def where(key: str) -> str:
        return origins.get(key, "base.yaml and the env file")

    for key, field in spec.items():
        if field.type != "size" or key not in values:
            continue
        value = values[key]
        if value is None and field.nullable:
            continue
        size = size_bytes(value)
        if size is None or size <= 0:
            raise error(f"{where(key)}: {key}: expected a memory size above zero such as 512m or 4g, "
                            f"got {value!r}")
    for key, value in values.items():
        check = _check_for(key)
        if check is not None and value is not None and not check.ok(value):
            raise error(f"{where(key)}: {key}: expected {check.expected}, got {value!r}")


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (file and line in the message)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *anchor`` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it
                break
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)
