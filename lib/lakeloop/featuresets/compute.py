"""Computing one feature set as of ``t``, for a gold table or for the rows of a training set.

:func:`compute` builds, from the set's source rows in ``[t - window, t)`` (optionally filtered and
enriched with dimension attributes as of ``t``):

* one ``groupBy(entity)`` for every ungrouped aggregate, list and SQL decay feature;
* one two-level ``groupBy(entity, group)`` then ``groupBy(entity)`` per distinct ``group_by``
  expression, whose features become maps sorted by key;
* one frame per numba decay, transform or bag-of-words feature, and one per sessions computation
  (features with the same gap, ``where``, window and impl);
* one as-of lookup per dimension;

then joins them onto the *base*: for a gold table the set's spine (``source``: the entities with
rows in the window, and/or every key of a dimension as of ``t``), for a training set the label
rows.  Defaults fill the entities without rows, then derived features are added in order.

In point-in-time mode (:class:`~lakeloop.featuresets.scope.Scope` without a literal) the base
carries each row's time in ``_t``; source rows are joined to the distinct ``(entity, _t)`` of the
base on the entity and kept when ``_t - window <= time < _t`` (a range join), and every group also
has ``_t`` as a key.  No Python runs per row in either mode (numba kernels run per Arrow batch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from lakeloop.conf import ConfError
from lakeloop.featuresets import bag_of_words, decay, derived, dimension, sessions, transform
from lakeloop.featuresets.scope import Scope, T
from lakeloop.featuresets.sets import KINDS, default_for, output_columns

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from lakeloop.featuresets.spec import Feature, FeatureSet

__all__ = ["Reader", "compute", "source_rows", "absent_row"]

#: table name -> DataFrame (the build reads each table once per run)
Reader = Callable[[str], "DataFrame"]
_BASE = "_base"
_GROUP = "_g"


def _is_numba(f: Feature) -> bool:
    return f.kind == "decay" and f.opts["impl"] == "numba"


def _plain(f: Feature) -> bool:
    """Computed in the set's single ``groupBy(entity)``."""
    return f.kind in ("aggregate", "list", "decay") and not _is_numba(f) and not f.opts.get("group_by")


def source_rows(fs: FeatureSet, read: Reader, scope: Scope, points: DataFrame | None) -> DataFrame:
    """The set's source rows in ``[t - max window, t)``, filtered and enriched."""
    from pyspark.sql import functions as F

    rows = read(fs.source)
    if fs.filter:
        rows = rows.where(F.expr(fs.filter))
    if points is not None:
        rows = rows.join(points, list(fs.entity))
    rows = rows.where(scope.window_filter(fs.time, fs.max_window, fs.include_t))
    for spec in fs.enrich:
        dim = fs.dimensions[spec.dimension]
        wanted = None
        if points is not None:
            wanted = rows.select(*[F.col(o).alias(k) for o, k in zip(spec.on, dim.key, strict=True)], T).distinct()
        attrs = dimension.as_of(read(dim.table), dim, scope, {f"_e_{n}": c for n, c, _ in spec.columns}, wanted)
        attrs = attrs.select(*[F.col(k).alias(o) for o, k in zip(spec.on, dim.key, strict=True)], *scope.keys,
                             *[f"_e_{n}" for n, _, _ in spec.columns])
        rows = rows.join(attrs, [*spec.on, *scope.keys], "left")
        for name, _, default in spec.columns:
            value = F.col(f"_e_{name}") if default is None else F.coalesce(f"_e_{name}", F.lit(default))
            rows = rows.withColumn(name, value).drop(f"_e_{name}")
    return rows


def _sorted_map(value: str, matched: Column | None) -> Column:
    from pyspark.sql import functions as F

    entry = F.struct(F.col(_GROUP), F.col(value))
    return F.map_from_entries(F.array_sort(F.collect_list(entry if matched is None else F.when(matched, entry))))


def _grouped(rows: DataFrame, fs: FeatureSet, features: list[Feature], scope: Scope, keys: list[str]) -> DataFrame:
    """Features sharing one ``group_by``: ``groupBy(keys, group)`` then maps per ``keys``."""
    from pyspark.sql import functions as F

    inner, outer = [], []
    for f in features:
        inner.append(KINDS[f.kind].column(fs, f, scope).alias(f.name))
        cond = scope.condition(fs, f)
        if cond is not None:
            inner.append(F.count_if(cond).alias(f"_n_{f.name}"))
        outer.append(_sorted_map(f.name, None if cond is None else F.col(f"_n_{f.name}") > 0).alias(f.name))
    grouped = rows.withColumn(_GROUP, F.expr(features[0].opts["group_by"]))
    return grouped.groupBy(*keys, _GROUP).agg(*inner).groupBy(*keys).agg(*outer)


def _numba(rows: DataFrame, fs: FeatureSet, f: Feature, scope: Scope, keys: list[str]) -> DataFrame:
    from pyspark.sql import functions as F

    if f.opts["group_by"]:
        if len(fs.entity) != 1:
            raise ConfError(f"{f.origin}: impl numba with group_by needs a one-column entity; use impl sql")
        out = decay.numba_frame(rows.withColumn(_GROUP, F.expr(f.opts["group_by"])), fs, f, scope, _GROUP)
        return out.groupBy(*keys).agg(_sorted_map(f.name, None).alias(f.name))
    if len(fs.entity) != 2:
        raise ConfError(f"{f.origin}: impl numba without group_by needs a two-column entity (integer, string); "
                        "use impl sql")
    return decay.numba_frame(rows, fs, f, scope, fs.entity[1])


def _frames(rows: DataFrame, fs: FeatureSet, scope: Scope) -> tuple[DataFrame | None, list[DataFrame]]:
    """(the plain ``groupBy(entity)`` frame, the other frames), all keyed by entity (+ ``_t``)."""

    keys = [*fs.entity, *scope.keys]
    plain = [f for f in fs.features if _plain(f)]
    main = rows.groupBy(*keys).agg(*[KINDS[f.kind].column(fs, f, scope).alias(f.name) for f in plain]) \
        if plain else None
    others: list[DataFrame] = []
    by_group: dict[str, list[Feature]] = {}
    by_gap: dict[tuple, list[Feature]] = {}
    for f in fs.features:
        if f.kind in ("aggregate", "decay") and f.opts.get("group_by") and not _is_numba(f):
            by_group.setdefault(f.opts["group_by"], []).append(f)
        elif f.kind == "sessions":
            by_gap.setdefault(sessions.share_key(f), []).append(f)
        elif _is_numba(f):
            others.append(_numba(rows, fs, f, scope, keys))
        elif f.kind == "bag_of_words":
            others.append(bag_of_words.frame(rows, fs, f, scope, keys))
        elif f.kind == "transform":
            seen = rows if scope.keys else rows.withColumn(T, scope.t)
            out = transform.frame(seen, f.opts["function"], f.opts["params"], [*fs.entity, T], f.name, f.origin)
            others.append(out if scope.keys else out.drop(T))
    others += [_grouped(rows, fs, group, scope, keys) for group in by_group.values()]
    others += [sessions.frame(rows, fs, group, scope, keys) for group in by_gap.values()]
    return main, others


def _dimension_frames(fs: FeatureSet, read: Reader, scope: Scope,
                      points: DataFrame | None) -> dict[str, DataFrame]:
    """Per dimension used by a feature or the spine: ``(*entity, [_t,] *its features)`` as of ``t``."""
    from pyspark.sql import functions as F

    used = {f.opts["dimension"] for f in fs.features if f.kind == "dimension"} | \
        {s for s in fs.spine if s != "source" and points is None}
    out = {}
    for name in sorted(used):
        dim = fs.dimensions[name]
        cols = {f.name: f.opts["expr"] for f in fs.features if f.kind == "dimension" and f.opts["dimension"] == name}
        wanted = None
        if points is not None:
            wanted = points.select(*[F.col(e).alias(k) for e, k in zip(fs.entity, dim.key, strict=True)], T)
        frame = dimension.as_of(read(dim.table), dim, scope, cols, wanted)
        out[name] = frame.select(*[F.col(k).alias(e) for e, k in zip(fs.entity, dim.key, strict=True)],
                                 *scope.keys, *cols)
    return out


def _join_all(base: DataFrame, frames: list[DataFrame], keys: list[str]) -> DataFrame:
    for frame in frames:
        base = base.join(frame, keys, "left")
    return base


def _gold_base(rows: DataFrame, fs: FeatureSet, main: DataFrame | None, others: list[DataFrame],
               dims: dict[str, DataFrame]) -> DataFrame:
    """The set's spine with every frame joined (gold mode, literal ``t``)."""
    keys = list(fs.entity)
    spine_dims = [dims[s] for s in fs.spine if s != "source"]
    if "source" in fs.spine:
        base = main if main is not None else rows.select(*keys).distinct()
    else:
        base, spine_dims = spine_dims[0], spine_dims[1:]
    for frame in spine_dims:
        base = base.join(frame, keys, "full")
    if "source" not in fs.spine and main is not None:
        others = [main, *others]
    rest = [f for name, f in dims.items() if name not in fs.spine]
    return _join_all(base, [*others, *rest], keys)


def _finish(df: DataFrame, fs: FeatureSet) -> DataFrame:
    from pyspark.sql import functions as F

    for f in fs.features:
        value = default_for(f)
        if value is not None and f.kind != "derived":
            df = df.withColumn(f.name, F.coalesce(F.col(f.name), F.lit(value)))
    for f in fs.features:
        if f.kind == "derived":
            df = derived.apply(df, f)
            if f.default is not None:
                df = df.withColumn(f.name, F.coalesce(F.col(f.name), F.lit(f.default)))
    return df


def absent_row(fs: FeatureSet, like: DataFrame) -> DataFrame:
    """One row of the features an entity absent from the set's rows gets when the set is joined (as
    :func:`compute` with a ``base`` gives it: defaults, then the derived features over them), typed as ``like``
    (the set's rows).  The entity columns are null: a derived feature reading them is null here."""
    from pyspark.sql import functions as F

    plain = [f.name for f in fs.features if f.kind != "derived"]
    blank = like.limit(1).select(*[F.lit(None).cast(like.schema[c].dataType).alias(c) for c in (*fs.entity, *plain)])
    done = _finish(blank, fs)
    return done.select(*fs.entity, *[F.col(f.name).cast(like.schema[f.name].dataType) for f in fs.features])


def _explain(fs: FeatureSet, rows: DataFrame, exc: Exception) -> ConfError:
    """The first feature whose expressions fail against the source rows, else the set."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    for f in fs.features:
        exprs = [v for k, v in f.opts.items() if k in ("expr", "group_by") and v and f.kind not in ("derived",
                                                                                                  "dimension")]
        exprs += [f.where] if f.where else []
        for e in exprs:
            try:
                rows.select(F.expr(e)).schema  # noqa: B018 - analysis only
            except AnalysisException as inner:
                return ConfError(f"{f.origin}: {e!r}: {str(inner).splitlines()[0]}")
    return ConfError(f"{fs.file}: {str(exc).splitlines()[0]}")


def compute(fs: FeatureSet, read: Reader, scope: Scope, base: DataFrame | None = None,
            select: Mapping[str, str] | None = None) -> DataFrame:
    """The set's features as of ``scope``.

    ``base`` None: the gold rows (spine; literal ``t`` only) as ``(*entity, *features)``.  Else the
    base's columns plus ``select`` (output name -> feature name, default every feature); the base
    holds the entity columns, and ``_t`` in point-in-time mode.
    """
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    if base is None and scope.literal is None:
        raise ValueError("a gold feature table is computed as of one literal time")
    keys = [*fs.entity, *scope.keys]
    points = base.select(*keys).distinct() if base is not None and scope.keys else None
    rows = source_rows(fs, read, scope, points)
    try:
        main, others = _frames(rows, fs, scope)
        dims = _dimension_frames(fs, read, scope, points)
        if base is None:
            out = _finish(_gold_base(rows, fs, main, others, dims), fs)
            return out.select(*fs.entity, *[c for f in fs.features for c in output_columns(f)])
        hidden = base.select(*keys, F.struct(*[c for c in base.columns]).alias(_BASE))
        frames = ([main] if main is not None else []) + others + list(dims.values())
        out = _finish(_join_all(hidden, frames, keys), fs)
    except AnalysisException as exc:
        raise _explain(fs, rows, exc) from None
    select = dict(select) if select is not None else {f.name: f.name for f in fs.features}
    return out.select(f"{_BASE}.*", *[c for name, src in select.items() for c in output_columns(fs.feature(src), name)])
