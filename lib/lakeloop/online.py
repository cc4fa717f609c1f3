"""Online scoring: a model's features read per entity from the serving store, scored like the batch path.

The offline → online step is :mod:`lakeloop.materialize`: a feature set's gold rows of a run date are written
into the serving store, one key per entity (its entity columns joined by ``|``, :func:`entity_key`), the value
the set's features as one JSON object, in a namespace of its own (:func:`feature_namespace`).

A model named in ``serve.online.models`` is answered at ``POST /v1/score/<model>``.  Its
:class:`OnlineSpec` comes from the same declarations as bulk inference: the model spec's scoring section
names the training set (:func:`lakeloop.scoring.feature_inputs`), whose joins say which set gives which
feature column under which name, in which order, and what missing values become (``fill``).  For each
request row the joins run in the declared order, each a ``get_many`` of the row's entity key from the set's
namespace (a later join may be keyed by a column an earlier one added, as in the batch path; an entity
the set has no row for gets what the batch join gives it, stored with the set under :data:`ABSENT_KEY`); values the
request row carries for a feature column are request-time values and are used as they are.  The feature
matrix and the model's outputs are built by the functions bulk inference uses
(:func:`lakeloop.scorer.load_scorer`, :func:`lakeloop.scorer.task_outputs`): an entity scored online as of the
materialized date gets the score the predictions table holds for it.  Derived features are computed by
Spark when the set is built, so there is no second implementation of them here.

Each worker may keep the feature rows it read in a :class:`FeatureCache` (``serve.online.cache_entries``):
a committed version's rows never change, so a row cached under ``(namespace, version, key)`` is right for as
long as that version is current, and every request still reads which version is current (with the keys the
cache does not hold, in the same round trip), so a switch is seen by the next request.  A tree model is
scored by :func:`lakeloop.trees.compiled_trees` when that reproduces xgboost exactly (``serve.online.compile``).

The model is the registered version holding ``@champion``, loaded once per worker process; every
``serve.online.refresh_s`` seconds a thread checks the alias and, when it moved, loads the new version
next to the old one and then switches to it, so requests never wait for a load or fail during one.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lakeloop.serving.base import check_name, key_text

if TYPE_CHECKING:
    from lakeloop.conf import Conf
    from lakeloop.infer import ModelRef
    from lakeloop.serving import ServingStore

__all__ = ["OnlineJoin", "OnlineSpec", "OnlineModel", "OnlineError", "FeatureCache", "entity_key", "feature_namespace",
           "online_spec", "online_specs", "KEY_SEPARATOR", "ABSENT_KEY"]

log = logging.getLogger(__name__)

KEY_SEPARATOR = "|"
#: the key of a materialized version holding what an entity without a row gets (:mod:`lakeloop.materialize`)
ABSENT_KEY = "\u2205"  # the empty set sign: no entity key of the engine's own sets looks like it


class OnlineError(Exception):
    """A request the model cannot answer: ``status`` is the HTTP status (422 bad rows, 503 no model)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def feature_namespace(namespace: str, set_name: str) -> str:
    """The serving-store namespace holding feature set ``set_name``'s materialized rows."""
    return check_name("namespace", f"{namespace}.features.{set_name}")


def entity_key(values: Sequence[Any]) -> str:
    """The store key of one entity: its entity column values as text joined by ``|`` (integers in decimal).

    >>> entity_key([42, "shoes"])
    '42|shoes'
    """
    return KEY_SEPARATOR.join(key_text(v) for v in values)


@dataclass(frozen=True)
class OnlineJoin:
    """One join of the training set: the set's namespace, its entity columns, (output, feature) columns."""

    set: str
    namespace: str
    entity: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class OnlineSpec:
    """What a serving worker needs to score a model online; plain values, carried to the workers as JSON."""

    model: str
    mlflow_name: str
    tracking_uri: str
    registry_uri: str
    task: str
    joins: tuple[OnlineJoin, ...]
    fill: Mapping[str, Any] = field(default_factory=dict)

    @property
    def request_keys(self) -> list[str]:
        """The entity columns a request row must carry: those no earlier join adds."""
        added: set[str] = set()
        wanted: list[str] = []
        for join in self.joins:
            wanted += [c for c in join.entity if c not in added and c not in wanted]
            added.update(out for out, _ in join.columns)
        return wanted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OnlineSpec:
        joins = tuple(OnlineJoin(set=j["set"], namespace=j["namespace"], entity=tuple(j["entity"]),
                                 columns=tuple(tuple(c) for c in j["columns"])) for j in data["joins"])
        return cls(**{**data, "joins": joins, "fill": dict(data.get("fill") or {})})


def online_spec(conf: Conf, model: str) -> OnlineSpec:
    """The :class:`OnlineSpec` of model spec ``model`` (``conf/models/<model>.yaml``) from its training set."""
    from lakeloop import scoring
    from lakeloop.featuresets import load_specs
    from lakeloop.train import registry
    from lakeloop.train.spec import model_conf

    mconf = model_conf(conf, model)
    spec = scoring.required(mconf.scoring, f"model {mconf['mlflow.model_name']} (train.* keys)")
    training = scoring.training_spec(mconf, spec, load_specs(mconf))
    sets = load_specs(mconf).sets
    joins = tuple(OnlineJoin(set=j.set, namespace=feature_namespace(conf["serving.namespace"], j.set),
                             entity=tuple(sets[j.set].entity), columns=tuple(j.columns)) for j in training.joins)
    return OnlineSpec(model=model, mlflow_name=mconf["mlflow.model_name"], tracking_uri=registry.tracking_uri(mconf),
                      registry_uri=registry.registry_uri(mconf), task=mconf["train.task"], joins=joins,
                      fill=dict(training.fill))


def online_specs(conf: Conf) -> dict[str, dict[str, Any]]:
    """``serve.online.models`` as ``{model: OnlineSpec.to_dict()}`` (what the serve settings carry)."""
    return {name: online_spec(conf, name).to_dict() for name in conf["serve.online.models"]}


def champion(spec: OnlineSpec) -> ModelRef:
    """The registered version of ``spec``'s model holding ``@champion``.

    A client bound to ``spec``'s URIs, never the process-wide ones: the watcher thread must not move what a
    job running in the same process reads.
    """
    from mlflow import MlflowClient

    from lakeloop.infer import model_ref
    from lakeloop.train import registry

    client = MlflowClient(tracking_uri=spec.tracking_uri, registry_uri=spec.registry_uri)
    mv = client.get_model_version_by_alias(spec.mlflow_name, registry.CHAMPION)
    return model_ref(spec.mlflow_name, str(mv.version), client.get_model_version_download_uri(spec.mlflow_name,
                                                                                               mv.version))


_MISS = object()


class FeatureCache:
    """Decoded feature rows by ``(namespace, version, key)``, at most ``size`` of them (the oldest dropped first).

    Needs no invalidation: a committed version is never changed, and :meth:`read` checks which version is current
    on every call.  Rows of a store with a TTL (``serving.ttl_seconds``) are never cached (they expire).
    """

    def __init__(self, size: int) -> None:
        self.size, self.hits, self.misses = size, 0, 0
        # an OrderedDict, not a dict: dropping a dict's first entry over and over leaves it to skip ever more
        # deleted slots to find the next first one
        self._rows: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._versions: dict[str, str] = {}  # namespace -> the version the last read saw current

    def __len__(self) -> int:
        return len(self._rows)

    def read(self, stores: Sequence[ServingStore], keys: Sequence[list[str]], seen: dict[str, str | None],
             also: Sequence[ServingStore] = ()) -> list[list[Any]]:
        """The values of ``keys[i]`` in ``stores[i]``'s current version, each list from one version.

        ``seen`` holds the versions this request has read already (and gets those read now): a store whose
        keys are all cached under that version is not read again.  ``also``: stores whose current version is
        read in the same round trip, for a later call of the same request.
        """
        assumed = [seen.get(s.namespace) or self._versions.get(s.namespace) for s in stores]
        cached = [[self._rows.get((s.namespace, v, k), _MISS) if v else _MISS for k in ks]
                  for s, v, ks in zip(stores, assumed, keys, strict=True)]
        wanted = [[k for k, c in zip(ks, cs, strict=True) if c is _MISS] for ks, cs in zip(keys, cached, strict=True)]
        calls = [i for i, s in enumerate(stores) if wanted[i] or s.namespace not in seen]
        extra = [s for s in also if s.namespace not in seen]
        answers = stores[0].read_each([(stores[i], wanted[i]) for i in calls] + [(s, []) for s in extra]) \
            if calls or extra else []
        for s, (version, _) in zip(extra, answers[len(calls):], strict=True):
            seen[s.namespace] = version
        answered = dict(zip(calls, answers, strict=False))
        return [self._complete(stores[i], keys[i], cached[i], assumed[i], answered.get(i), seen)
                for i in range(len(stores))]

    def _complete(self, store: ServingStore, keys: list[str], cached: list[Any], assumed: str | None,
                  answer: tuple[str | None, list[Any]] | None, seen: dict[str, str | None]) -> list[Any]:
        """One store's values: cached ones with those just read, all read again when the version moved."""
        namespace = store.namespace
        if answer is None:  # every key cached under the version this request saw
            self.hits += len(keys)
            return cached
        version, found = answer
        if version != assumed and len(found) < len(keys):  # a switch: the cached rows are another version's
            version, found = store.read_each([(store, keys)])[0]
            cached = [_MISS] * len(keys)
        seen[namespace] = version
        if version is None:
            return found if len(found) == len(keys) else [None] * len(keys)
        self._versions[namespace] = version
        self.misses += len(found)
        self.hits += len(keys) - len(found)
        new = iter(found)
        values = [next(new) if c is _MISS else c for c in cached]
        for key, c, value in zip(keys, cached, values, strict=True):
            if c is _MISS:
                self._put((namespace, version, key), value)
        return values

    def _put(self, entry: tuple[str, str, str], value: Any) -> None:
        rows = self._rows
        if len(rows) >= self.size:
            rows.popitem(last=False)
        rows[entry] = value


class OnlineModel:
    """One model answered online in this process: its feature stores, the loaded champion, the refresher."""

    def __init__(self, spec: OnlineSpec, stores: Mapping[str, ServingStore], refresh_s: float = 10.0,
                 cache_entries: int = 0, compile_trees: bool = True, read_ahead_rows: int = 8) -> None:
        self.spec, self.stores, self.refresh_s, self.compile_trees = spec, stores, refresh_s, compile_trees
        self.read_ahead_rows = read_ahead_rows
        cacheable = cache_entries > 0 and not any(s.settings.ttl_seconds for s in stores.values())
        self.cache = FeatureCache(cache_entries) if cacheable else None
        self._loaded: tuple[ModelRef, Any] | None = None
        self._error: str | None = "not loaded yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the model ---------------------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Load the ``@champion`` version when it is not the one loaded; True when it switched."""
        from lakeloop.scorer import _Scorer

        try:
            ref = champion(self.spec)
            if self._loaded is not None and self._loaded[0].version == ref.version:
                return False
            scorer = _Scorer(ref, ref.features)
            scorer = self._compiled(scorer) or scorer
        except Exception as exc:  # noqa: BLE001 - the service keeps the model it has and says why
            self._error = f"model {self.spec.mlflow_name} @champion cannot be loaded: {exc}"
            log.warning("%s", self._error)
            return False
        self._loaded, self._error = (ref, scorer), None
        log.info("online model %s: serving version %s", self.spec.model, ref.version)
        return True

    def _compiled(self, scorer: Any) -> Any:
        """The compiled trees of ``scorer``'s booster (:func:`lakeloop.trees.compiled_trees`), or None."""
        from lakeloop.trees import compiled_trees

        booster = getattr(scorer, "_booster", None)
        if not self.compile_trees or booster is None or self.spec.task == "multiclass":
            return None
        return compiled_trees(booster)

    def start(self) -> OnlineModel:
        """Load the champion now and check the alias every ``refresh_s`` seconds in a daemon thread."""
        self.refresh()
        self._thread = threading.Thread(target=self._watch, name=f"online-{self.spec.model}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching the alias (the loaded version keeps answering)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _watch(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh()

    def readiness(self) -> str | None:
        """None when a model version is loaded, else why not (the ``/readyz`` check)."""
        return None if self._loaded is not None else self._error

    @property
    def version(self) -> str | None:
        return None if self._loaded is None else self._loaded[0].version

    # -- scoring -----------------------------------------------------------------------------------------
    def features(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` with every join's feature columns from the store, request-time values kept, filled.

        The joins run in the training set's order, in stages: the joins keyed only by columns the rows have are
        read together (one round trip on Redis), then each join keyed by a column an earlier join adds."""
        columns = self._columns(rows)
        return [{c: v[i] for c, v in columns.items() if v[i] is not _NONE} for i in range(len(rows))]

    def _columns(self, rows: Sequence[Mapping[str, Any]], wanted: frozenset[str] | None = None) -> dict[str, list[Any]]:
        """What :meth:`features` gives, column by column (a value per row; :data:`_NONE` where a request row has
        no such column): only the columns in ``wanted`` and the joins' keys are attached and filled (all: None).

        Column lists, not a dict per row: a request's rows are attached, filled and turned into the feature
        matrix by list comprehensions over a column, the costs per value several times lower."""
        names = dict.fromkeys(c for r in rows for c in r)
        out = {c: [r.get(c, _NONE) for r in rows] for c in names}
        if wanted is not None:
            wanted = wanted.union(*(j.entity for j in self.spec.joins))
        have = {c for c, values in out.items() if _NONE not in values}  # the columns every row has
        pending = list(self.spec.joins)
        seen: dict[str, str | None] = {}  # the version of each namespace this request read
        ahead: dict[str, tuple[list[str], list[Any]]] = {}  # namespace -> keys and values read with a stage before
        while pending:
            stage = [j for j in pending if set(j.entity) <= have] or pending[:1]
            pending = [j for j in pending if j not in stage]
            keys = [[*self._keys(out, len(rows), j), ABSENT_KEY] for j in stage]
            stores = [self.stores[j.namespace] for j in stage]
            if self.cache is None:
                found = self._read(out, len(rows), stage, keys, pending, ahead)
            else:
                found = self.cache.read(stores, keys, seen, [self.stores[j.namespace] for j in pending])
            for join, values in zip(stage, found, strict=True):
                self._attach(join, out, values, wanted)
                have.update(c for c, _ in join.columns if c in out and _NONE not in out[c])
        for column, value in self.spec.fill.items():
            if wanted is None or column in wanted:
                given = out.get(column)
                out[column] = ([value] * len(rows) if given is None
                               else [value if v is None or v is _NONE else v for v in given])
        return out

    def _read(self, columns: dict[str, list[Any]], n: int, stage: list[OnlineJoin], keys: list[list[str]],
              pending: list[OnlineJoin], ahead: dict[str, tuple[list[str], list[Any]]]) -> list[list[Any]]:
        """The values of ``stage``'s ``keys``: those read ahead with the stage before when that read used the
        same keys, the others now, with the next stage's joins read ahead where the store can (one round trip
        for a join keyed by a column an earlier join adds, :meth:`ServingStore.read_ahead`)."""
        found: list[list[Any] | None] = [ahead[j.namespace][1] if j.namespace in ahead and ahead[j.namespace][0] == k
                                         else None for j, k in zip(stage, keys, strict=True)]
        todo = [i for i, values in enumerate(found) if values is None]
        if todo:
            joins = [stage[i] for i in todo]
            # on Redis the values read ahead pass through a script, whose cost per row outgrows the round trip
            # it saves beyond about ten rows (docs/serving.md, Read-ahead)
            nxt = self._templates(columns, n, joins, pending) if 0 < n <= self.read_ahead_rows else []
            store = self.stores[joins[0].namespace]
            first, then = store.read_ahead([(self.stores[j.namespace], keys[i]) for i, j in zip(todo, joins,
                                                                                             strict=True)],
                                           [(self.stores[j.namespace], t) for j, t in nxt])
            for i, (_, values) in zip(todo, first, strict=True):
                found[i] = values
            for (join, _), got in zip(nxt, then, strict=True):
                if got is not None:
                    ahead[join.namespace] = (got[1], got[2])
        return found  # type: ignore[return-value]

    @staticmethod
    def _templates(columns: dict[str, list[Any]], n: int, stage: list[OnlineJoin],
                   pending: list[OnlineJoin]) -> list[tuple[OnlineJoin, list[list[Any]]]]:
        """The joins of ``pending`` keyed by columns the rows will have once ``stage`` is attached, each with its
        keys as :data:`lakeloop.serving.base.KeyTemplate` parts: a column the row has as text, a column a join of
        ``stage`` adds as ``(its index in stage, feature)`` (:meth:`_attach`: the first join adding it)."""
        adds: dict[str, tuple[int, str]] = {}
        for i, join in enumerate(stage):
            for column, feature in join.columns:
                adds.setdefault(column, (i, feature))
        out = []
        for join in pending:
            templates = [_template(row, join.entity, adds) for row in zip(*_entity_values(columns, n, join),
                                                                          strict=True)]
            if all(t is not None for t in templates):
                out.append((join, [*templates, [ABSENT_KEY]]))
        return out

    @staticmethod
    def _attach(join: OnlineJoin, columns: dict[str, list[Any]], found: list[Any],
                wanted: frozenset[str] | None) -> None:
        """``join``'s feature columns (those in ``wanted``, all when None) into ``columns`` from the values read
        (the last one: the absent row), where a row has no value for the column yet."""
        *values, absent = found
        if absent is None:
            raise OnlineError(503, f"feature set {join.set} is not materialized (run the materialize job)")
        found_rows = [absent if value is None else value for value in values]
        for column, feature in join.columns:
            given = columns.get(column)
            if (wanted is not None and column not in wanted) or (given is not None and _NONE not in given):
                continue
            got = [row.get(feature) for row in found_rows]
            columns[column] = got if given is None else [g if v is _NONE else v for v, g in zip(given, got,
                                                                                                  strict=True)]

    def _keys(self, columns: dict[str, list[Any]], n: int, join: OnlineJoin) -> list[str]:
        """The store keys of ``join`` for the rows (:func:`entity_key` of each row's entity columns)."""
        values = _entity_values(columns, n, join)
        if not all(type(v) is int or type(v) is str for column in values for v in column):
            return [self._key(dict(zip(join.entity, row, strict=True)), join, i)  # names the row that is wrong
                    for i, row in enumerate(zip(*values, strict=True))]
        if len(values) == 1:  # str() of a str or an int is what key_text gives, without its checks
            return [str(v) for v in values[0]]
        if len(values) == 2:
            return [f"{a}{KEY_SEPARATOR}{b}" for a, b in zip(*values, strict=True)]
        return [KEY_SEPARATOR.join(map(str, row)) for row in zip(*values, strict=True)]

    def _key(self, row: Mapping[str, Any], join: OnlineJoin, i: int) -> str:
        missing = [c for c in join.entity if row.get(c) is None or row[c] is _NONE]
        if missing:
            raise OnlineError(422, f"rows[{i}]: no {missing[0]!r}: every row needs "
                                   f"{', '.join(self.spec.request_keys)} (set {join.set} is keyed by "
                                   f"{', '.join(join.entity)})")
        try:
            return entity_key([row[c] for c in join.entity])
        except Exception as exc:  # noqa: BLE001 - a key that is neither text nor an integer
            raise OnlineError(422, f"rows[{i}]: {exc}") from None

    def score(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """``{"model", "version", "results": [{"score"[, "prediction"]}, ...]}`` for ``rows`` (one per row)."""
        from lakeloop.scorer import task_outputs

        loaded = self._loaded  # one read: a switch between here and the answer does not mix two versions
        if loaded is None:
            raise OnlineError(503, self._error or "no model loaded")
        ref, scorer = loaded
        matrix = _matrix(self._columns(rows, frozenset(ref.features)), ref.features, len(rows))
        outputs = [o.tolist() for o in task_outputs(scorer(matrix), self.spec.task)]
        if len(outputs) == 1:
            results = [{"score": s} for s in outputs[0]]
        else:
            results = [{"score": s, "prediction": p} for s, p in zip(*outputs, strict=True)]
        return {"model": self.spec.model, "version": ref.version, "results": results}


def _entity_values(columns: Mapping[str, list[Any]], n: int, join: OnlineJoin) -> list[list[Any]]:
    """The values of ``join``'s entity columns, a list per column (:data:`_NONE` for a column the rows lack)."""
    return [columns.get(c, [_NONE] * n) for c in join.entity]


def _template(values: Sequence[Any], entity: Sequence[str], adds: Mapping[str, tuple[int, str]]) -> list[Any] | None:
    """The key of a row whose ``entity`` columns hold ``values`` (:data:`_NONE`: the row has no such column) as
    template parts (``adds``: the columns a stage being read adds, by column), or None when a column is neither in
    ``adds`` nor a text or integer value of the row."""
    parts: list[Any] = []
    for c, value in zip(entity, values, strict=True):
        if value is _NONE and c in adds:
            parts.append(adds[c])
        elif type(value) is int or type(value) is str:
            parts.append(str(value))
        else:
            return None
        parts.append(KEY_SEPARATOR)
    return parts[:-1]


#: a request row without the column: not a value (an explicit null is one, and is filled like a missing row)
_NONE: Any = type("_NoValue", (), {"__repr__": lambda self: "<no value>"})()


def _matrix(columns: Mapping[str, list[Any]], features: Sequence[str], n: int) -> np.ndarray:
    """The float32 feature matrix of the rows in ``columns`` (None as NaN), as :func:`lakeloop.infer.feature_matrix`
    builds it: each value a double first (what Arrow holds in the batch path), then float32."""
    values = [[None] * n if (column := columns.get(name)) is None
              else [None if v is _NONE else v for v in column] if _NONE in column else column for name in features]
    try:  # one conversion in numpy: None is NaN in a float array
        matrix = np.array(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        matrix = None
    if matrix is not None and matrix.shape == (len(features), n):
        return matrix.T.astype(np.float32, order="C")
    for i in range(n):  # name the first value that is not a number
        for name, column in zip(features, values, strict=True):
            try:
                float(np.nan if column[i] is None else column[i])
            except (TypeError, ValueError, OverflowError):
                raise OnlineError(422, f"rows[{i}].{name}: {column[i]!r} is not a number") from None
    raise OnlineError(422, "rows: a feature value is not a number")
