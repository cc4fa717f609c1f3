"""Parsing one feature-set file (``conf/features/<name>.yaml``) into a :class:`FeatureSet`."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from lakeloop.featuresets import aggregate, bag_of_words, decay, derived, dimension, lists, sessions, transform
from lakeloop.featuresets.spec import _NAME, AS_OF, EnrichSpec, Feature, FeatureSet, Node

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pyspark.sql import Column

    from lakeloop.featuresets.spec import TrainingSpec

__all__ = ["KINDS", "parse_feature_set", "default_for", "output_names", "output_columns"]

#: feature kind -> the module that parses (and computes) it
KINDS: dict[str, ModuleType] = {"aggregate": aggregate, "list": lists, "decay": decay, "derived": derived,
                                "dimension": dimension, "transform": transform, "bag_of_words": bag_of_words,
                                "sessions": sessions}
_SET_KEYS = ("description", "source", "entity", "time", "filter", "window", "as_of", "spine", "dimensions",
             "enrich", "features", "materialize", "allow_empty", "table", "as_of_column", "include_t")
_FEATURE_KEYS = {
    "aggregate": ("agg", "expr", "where", "group_by", "window", "default"),
    "list": ("fields", "order_by", "max_length", "where", "window"),
    "decay": ("half_life", "group_by", "impl", "where", "window", "default"),
    "derived": ("expr", "default"),
    "dimension": ("dimension", "column", "expr", "default"),
    "transform": ("function", "params", "window", "default"),
    "bag_of_words": ("expr", "buckets", "lowercase", "min_length", "pattern", "weight", "where", "window"),
    "sessions": ("gap", "stat", "impl", "where", "window", "default"),
}
_WINDOWED = ("aggregate", "list", "decay", "transform", "bag_of_words", "sessions")


def default_for(feature: Feature) -> Any:
    """The value an entity without source rows gets."""
    kind = KINDS[feature.kind]
    return kind.default_for(feature) if hasattr(kind, "default_for") else feature.default


def output_names(feature: Feature, name: str | None = None) -> list[str]:
    """The columns ``feature`` gives a gold table or a training set under ``name`` (default its own name): the name
    itself, or for a kind with several columns (``bag_of_words``) the names that kind derives from it."""
    kind = KINDS[feature.kind]
    name = name or feature.name
    return kind.output_names(feature, name) if hasattr(kind, "output_names") else [name]


def training_feature_columns(spec: TrainingSpec, sets: Mapping[str, FeatureSet]) -> list[str]:
    """A training set's output columns that come from feature sets, in output order (a feature with several
    columns, such as a bag of words, gives each of them)."""
    produced = [c for j in spec.joins for out, src in j.columns for c in output_names(sets[j.set].feature(src), out)]
    order = spec.columns or (*spec.label.entity, spec.label.column, spec.label_time_column, *produced)
    return [c for c in order if c in produced]


def output_columns(feature: Feature, name: str | None = None) -> list[Column]:
    """The computed column of ``feature`` as its output columns (:func:`output_names`) under ``name``."""
    from pyspark.sql import functions as F

    kind = KINDS[feature.kind]
    name = name or feature.name
    if hasattr(kind, "output_columns"):
        return kind.output_columns(feature, feature.name, name)
    return [F.col(feature.name).alias(name)]


def _feature(node: Node) -> Feature:
    name = node.ident("name", required=True)
    kind = node.text("kind", required=True, choices=tuple(KINDS))
    opts = KINDS[kind].parse(node)
    allowed = _FEATURE_KEYS[kind]
    feature = Feature(name=name, kind=kind, origin=f"{node.file}: {node.key()} ({name})",
                      window=node.duration("window") if "window" in allowed else None,
                      where=node.text("where") if "where" in allowed else None,
                      default=node.scalar("default") if "default" in allowed else None, opts=opts)
    node.done(("name", "kind", *allowed))
    return feature


def _features(node: Node) -> tuple[Feature, ...]:
    raw = node.raw("features")
    if not isinstance(raw, list) or not raw:
        raise node.error("expected a non-empty list of features", "features")
    out = tuple(_feature(Node(item, node.file, f"features[{i}]")) for i, item in enumerate(raw))
    names = [f.name for f in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise node.error(f"feature {dupes[0]!r} is declared twice", "features")
    columns = [c for f in out for c in output_names(f)]
    clashes = sorted({c for c in columns if columns.count(c) > 1})
    if clashes:
        raise node.error(f"output column {clashes[0]!r} is produced twice", "features")
    return out


def _dimensions(node: Node) -> dict[str, Any]:
    raw = node.raw("dimensions", {})
    if not isinstance(raw, dict):
        raise node.error(f"expected a mapping of name -> dimension, got {raw!r}", "dimensions")
    sub = node.child("dimensions") if raw else None
    return {name: dimension.parse_dimension(name, sub.child(name)) for name in raw} if sub else {}


def _enrich(node: Node, dims: dict[str, Any]) -> tuple[EnrichSpec, ...]:
    raw = node.raw("enrich", [])
    if not isinstance(raw, list):
        raise node.error(f"expected a list, got {raw!r}", "enrich")
    out = []
    for i, item in enumerate(raw):
        sub = Node(item, node.file, f"enrich[{i}]")
        dim = sub.text("dimension", required=True, choices=tuple(dims) or ("<declare it under dimensions>",))
        on = sub.names("on", dims[dim].key)
        if len(on) != len(dims[dim].key):
            raise sub.error(f"{len(on)} columns for the {len(dims[dim].key)} key columns of {dim}", "on")
        cols = sub.raw("columns")
        if not isinstance(cols, dict) or not cols:
            raise sub.error("expected a mapping name -> {column, default} or name -> column", "columns")
        parsed = []
        for name, spec in cols.items():
            if isinstance(spec, str):
                spec = {"column": spec}
            cn = Node(spec, node.file, f"enrich[{i}].columns.{name}")
            parsed.append((name, cn.text("column", name), cn.scalar("default")))
            cn.done(("column", "default"))
        out.append(EnrichSpec(dimension=dim, on=on, columns=tuple(parsed), origin=f"{node.file}: enrich[{i}]"))
        sub.done(("dimension", "on", "columns"))
    return tuple(out)


def _check_references(node: Node, fs: FeatureSet) -> None:
    for i, f in enumerate(fs.features):
        if f.kind == "dimension":
            dim = f.opts["dimension"]
            if dim not in fs.dimensions:
                raise node.error(f"unknown dimension {dim!r} (declared: {', '.join(fs.dimensions) or 'none'})",
                                 f"features[{i}].dimension")
            if len(fs.dimensions[dim].key) != len(fs.entity):
                raise node.error(f"dimension {dim} has key {list(fs.dimensions[dim].key)}, the set's entity is "
                                 f"{list(fs.entity)}", f"features[{i}].dimension")
    for s in fs.spine:
        if s != "source" and (s not in fs.dimensions or len(fs.dimensions[s].key) != len(fs.entity)):
            raise node.error(f"expected source or a dimension keyed like the entity, got {s!r} "
                             f"(dimensions: {', '.join(fs.dimensions) or 'none'})", "spine")
    if any(f.name in fs.entity for f in fs.features):
        raise node.error("a feature may not be named like an entity column", "features")
    numba = [f.name for f in fs.features if f.kind == "decay" and f.opts["impl"] == "numba"]
    if fs.include_t and numba:
        raise node.error(f"{numba[0]} uses impl numba, which counts rows before t only; use impl sql",
                         "include_t")


def parse_feature_set(name: str, node: Node) -> FeatureSet:
    if not _NAME.match(name):
        raise node.error(f"the file name {name!r} must be a valid table name (letters, digits, _)")
    dims = _dimensions(node)
    fs = FeatureSet(
        name=name, file=node.file, source=node.table("source"), entity=node.names("entity", required=True),
        time=node.ident("time", required=True), filter=node.text("filter"),
        window=node.duration("window", required=True), as_of=node.text("as_of", "end_of_day", choices=AS_OF),
        spine=node.names("spine", ("source",)),
        dimensions=dims, enrich=_enrich(node, dims), features=_features(node),
        materialize=node.flag("materialize", True), allow_empty=node.flag("allow_empty", False),
        table=node.table("table", required=False) or f"gold.{name}",
        as_of_column=node.ident("as_of_column", "as_of"), include_t=node.flag("include_t", False))
    node.raw("description")
    node.done(_SET_KEYS)
    _check_references(node, fs)
    return fs
