"""The time a feature is computed as of: one literal ``t``, or a per-row ``_t`` (point-in-time joins).

Every kind builds its Spark expressions against a :class:`Scope`, so one definition serves both a
gold table (all entities as of one ``t``) and a training set (each label row as of its own time).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column

    from lakeloop.featuresets.spec import Feature, FeatureSet

__all__ = ["T", "Scope", "micros", "ts_literal", "day_start"]

#: column holding the per-row feature time in point-in-time mode
T = "_t"


def day_start(day: dt.date) -> dt.datetime:
    """Midnight UTC opening ``day``."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)


def micros(t: dt.datetime) -> int:
    if t.tzinfo is None:
        raise ValueError(f"timestamp {t} has no time zone; lakeloop times are UTC")
    return int(round(t.timestamp() * 1_000_000))


def ts_literal(t: dt.datetime) -> Column:
    from pyspark.sql import functions as F

    return F.timestamp_micros(F.lit(micros(t)))


@dataclass(frozen=True)
class Scope:
    """``literal`` set: features as of that instant; else as of each row's ``_t`` column."""

    literal: dt.datetime | None = None

    @property
    def t(self) -> Column:
        from pyspark.sql import functions as F

        return ts_literal(self.literal) if self.literal is not None else F.col(T)

    @property
    def keys(self) -> tuple[str, ...]:
        """Extra grouping keys: ``_t`` in point-in-time mode."""
        return () if self.literal is not None else (T,)

    def age_us(self, time: str) -> Column:
        """Microseconds from the row's event time to ``t``."""
        from pyspark.sql import functions as F

        return F.unix_micros(self.t) - F.unix_micros(F.col(time))

    def window_filter(self, time: str, window: dt.timedelta, include_t: bool = False) -> Column:
        """``t - window <= time < t`` (``include_t``: ``<= t``, the rows at ``t`` too)."""
        from pyspark.sql import functions as F

        t = ts_literal(self.literal) if self.literal is not None else F.col(T)
        if self.literal is not None:
            start = ts_literal(self.literal - window)
        else:
            start = F.timestamp_micros(F.unix_micros(F.col(T)) - F.lit(int(window.total_seconds() * 1_000_000)))
        before = F.col(time) <= t if include_t else F.col(time) < t
        return (F.col(time) >= start) & before

    def condition(self, fs: FeatureSet, feature: Feature) -> Column | None:
        """The feature's own ``where`` and, when narrower than the set's, its window."""
        from pyspark.sql import functions as F

        parts = []
        if feature.where:
            parts.append(F.expr(feature.where))
        if feature.window is not None and feature.window < fs.max_window:
            parts.append(self.age_us(fs.time) <= F.lit(int(feature.window.total_seconds() * 1_000_000)))
        if not parts:
            return None
        out = parts[0]
        for p in parts[1:]:
            out = out & p
        return out
