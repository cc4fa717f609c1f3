"""Model specs: which model to train on which training set, declared in ``conf/models/<name>.yaml``.

One file per model; the file name is the model's name (``train --model NAME``).  Every key is
optional and maps onto one ``train.*`` conf key, so a spec is "these ``train.*`` values for this
model"; what a spec leaves out keeps the conf's value.  Precedence, lowest first: the key's default,
``base.yaml`` / ``<env>.yaml``, the model spec, ``--set``.

=====================  ==========================  ==============================================
spec key               conf key                    allowed
=====================  ==========================  ==============================================
``mlflow_name``        ``mlflow.model_name``       the registered model (one per spec)
``table``              ``train.table``             ``layer.name`` of the training set
``task``               ``train.task``              ``binary``, ``regression``, ``multiclass``
``label``              ``train.label``             a column
``keys``               ``train.keys``              list of columns (never features)
``time``               ``train.time_column``       the label time column
``features``           ``train.features``          list; default every numeric column but keys/label/time/dt
``classes``            ``train.classes``           multiclass: number of classes
``backend``            ``train.backend``           ``xgboost``, ``torch``, ``tfos``, ``bigdl`` or ``pkg.mod:Class``
``params``             ``train.params``            backend hyper-parameters
``days``               ``train.days``              dt partitions up to ``--date``
``seed``               ``train.seed``
``split.kind``         ``train.split``             ``hash``, ``time``, ``random``
``split.column``       ``train.split_column``      hashed column (``hash``)
``split.fraction``     ``train.holdout_fraction``  target holdout fraction
``split.tolerance``    ``train.split_tolerance``   largest allowed miss of the target
``gate.metric``        ``train.gate_metric``       one of the task's metrics (:mod:`lakeloop.train.metrics`)
``gate.margin``        ``train.gate_margin``
``gate.confidence``    ``train.gate_confidence``   in (0, 1)
``gate.resamples``     ``train.gate_resamples``
``gate.feature_baselines`` ``train.feature_baselines``  single-feature baselines on/off
``gate.baselines``     ``train.baselines``         domain baselines (:mod:`lakeloop.train.baselines`)
``scoring.min_rows``   ``infer.min_rows``          fewest rows ``infer`` may publish
``scoring.table``      ``infer.table``             the predictions table
``scoring.serving.top_n`` ``infer.top_n``          rows per served list
=====================  ==========================  ==============================================

The rest of ``scoring`` (rows, as_of, training_set, serving) is parsed by
:func:`lakeloop.scoring.parse_scoring` into ``conf.scoring`` (a :class:`~lakeloop.scoring.ScoringSpec`).

:func:`model_conf` validates the chosen spec when a job starts: a wrong key, type or value raises
:class:`~lakeloop.conf.ConfError` (exit code 2) naming the file, the key and what is allowed.
Without a ``models/`` folder the conf's own ``train.*`` keys are the one model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lakeloop import scoring
from lakeloop.conf import SPEC, ConfError, _check_type
from lakeloop.train import metrics, tasks

if TYPE_CHECKING:
    from lakeloop.conf import Conf

__all__ = ["KEYS", "models_dir", "model_names", "read_spec", "read_scoring", "model_conf", "resolve_name",
           "default_name", "validate"]

# spec key (dotted) -> conf key
KEYS: dict[str, str] = {
    "mlflow_name": "mlflow.model_name", "table": "train.table", "task": "train.task", "label": "train.label",
    "keys": "train.keys", "time": "train.time_column", "features": "train.features", "classes": "train.classes",
    "backend": "train.backend", "params": "train.params", "days": "train.days", "seed": "train.seed",
    "split.kind": "train.split", "split.column": "train.split_column", "split.fraction": "train.holdout_fraction",
    "split.tolerance": "train.split_tolerance", "gate.metric": "train.gate_metric",
    "gate.margin": "train.gate_margin", "gate.confidence": "train.gate_confidence",
    "gate.resamples": "train.gate_resamples", "gate.feature_baselines": "train.feature_baselines",
    "gate.baselines": "train.baselines", **{f"scoring.{k}": v for k, v in scoring.CONF_KEYS.items()},
}
_SCORING = "scoring"  # parsed by lakeloop.scoring (only some of its keys set conf keys)
_SECTIONS = {k.split(".")[0] for k in KEYS if "." in k} - {_SCORING}
_OVERRIDES = ("--set", "override")


def models_dir(conf: Conf) -> Path | None:
    """``train.models_dir``, else ``models/`` of the conf dir; None when there is none."""
    configured = conf["train.models_dir"]
    if configured:
        return Path(conf.path("train.models_dir"))
    return conf.conf_dir / "models" if conf.conf_dir is not None else None


def model_names(conf: Conf) -> list[str]:
    """The declared model specs (file stems), sorted."""
    folder = models_dir(conf)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder and folder.is_dir() else []


def _flatten(tree: dict[str, Any], origin: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if key == _SCORING:
            out.update({f"{key}.{k}": v for k, v in scoring.parse_scoring(value, origin)[1].items()})
        elif key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfError(f"{origin}: {key}: expected a mapping of "
                                + ", ".join(k.split(".", 1)[1] for k in KEYS if k.startswith(key + ".")))
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    unknown = [k for k in out if k not in KEYS]
    if unknown:
        raise ConfError(f"{origin}: unknown key {unknown[0]!r}: expected one of {', '.join(KEYS)}")
    return out


def _tree(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfError(f"{path}: top level must be a mapping")
    return tree


def read_scoring(path: Path) -> scoring.ScoringSpec:
    """The spec file's ``scoring`` section (:func:`lakeloop.scoring.parse_scoring`; empty when absent)."""
    return scoring.parse_scoring(_tree(path).get(_SCORING, {}), str(path))[0]


def read_spec(path: Path) -> dict[str, Any]:
    """The spec file as ``{conf key: value}``, each value type-checked; ConfError names file and key."""
    tree = _tree(path)
    values = {}
    for key, value in _flatten(tree, str(path)).items():
        target = KEYS[key]
        try:
            values[target] = _check_type(key, value, SPEC[target], str(path))
        except ConfError as exc:
            raise ConfError(str(exc).replace(f": {key}: ", f": {key} ({target}): ", 1)) from None
    return values


def resolve_name(conf: Conf, name: str | None) -> str | None:
    """The model to train: ``name``, else ``train.model``, else the only spec; None: no specs at all."""
    names = model_names(conf)
    wanted = name or conf["train.model"]
    if wanted:
        if wanted not in names:
            raise ConfError(f"model {wanted!r}: no {models_dir(conf)}/{wanted}.yaml "
                            f"(declared: {', '.join(names) or 'none'})")
        return wanted
    if len(names) > 1:
        raise ConfError(f"{models_dir(conf)} declares several models ({', '.join(names)}): "
                        "choose one with --model NAME or train.model")
    return names[0] if names else None


def default_name(conf: Conf) -> str | None:
    """The app's default model (``train.model`` or the only spec), or None when that is ambiguous or absent."""
    try:
        return resolve_name(conf, None)
    except ConfError:
        return None


def model_conf(conf: Conf, name: str | None = None) -> Conf:
    """``conf`` with model ``name``'s spec merged in (``--set`` keys keep their value), validated.

    ``.model_name`` is the spec's name and ``.scoring`` its :class:`~lakeloop.scoring.ScoringSpec`
    (both None without a spec).
    """
    chosen = resolve_name(conf, name)
    origin = "train.* keys"
    merged = conf
    if chosen is not None:
        path = models_dir(conf) / f"{chosen}.yaml"
        origin = str(path)
        values = {k: v for k, v in read_spec(path).items() if conf.origin(k) not in _OVERRIDES}
        merged = conf.with_overrides(values)
        merged.model_name = chosen
        merged.scoring = read_scoring(path)
    else:
        merged = conf.with_overrides({})
        merged.model_name = None
        merged.scoring = None
    validate(merged, origin)
    return merged


def _spec_key(conf_key: str) -> str:
    return next((k for k, v in KEYS.items() if v == conf_key), conf_key)


def validate(conf: Conf, origin: str) -> None:
    """Cross-key checks of a model's conf; ConfError names ``origin``, the key and the allowed values."""
    from lakeloop.train.base import check_backend

    task = conf["train.task"]
    if conf["train.gate_metric"] not in metrics.names(task):
        raise ConfError(f"{origin}: {_spec_key('train.gate_metric')}: {conf['train.gate_metric']!r} is not a "
                        f"{task} metric: expected one of {', '.join(metrics.names(task))}")
    fraction = conf["train.holdout_fraction"]
    if not 0.0 < fraction < 1.0:
        raise ConfError(f"{origin}: {_spec_key('train.holdout_fraction')}: {fraction}: expected a number "
                        "between 0 and 1")
    if not 0.0 < conf["train.gate_confidence"] < 1.0:
        raise ConfError(f"{origin}: {_spec_key('train.gate_confidence')}: expected a number between 0 and 1")
    if conf["train.split"] == "hash" and not conf["train.split_column"]:
        raise ConfError(f"{origin}: {_spec_key('train.split_column')}: the hash split needs a column")
    if conf["train.split"] == "time" and not conf["train.time_column"]:
        raise ConfError(f"{origin}: {_spec_key('train.time_column')}: the time split needs the label time column")
    if task == "multiclass" and conf["train.classes"] is not None and conf["train.classes"] < 3:
        raise ConfError(f"{origin}: {_spec_key('train.classes')}: a multiclass model needs at least 3 classes "
                        "(2: task binary)")
    for name, base in conf["train.baselines"].items():
        if not isinstance(base, dict) or "column" not in base:
            raise ConfError(f"{origin}: gate.baselines.{name}: expected {{column: <name>, transform: clip | "
                            "max_scale}}")
        from lakeloop.train.baselines import TRANSFORMS

        if base.get("transform", "clip") not in TRANSFORMS:
            raise ConfError(f"{origin}: gate.baselines.{name}.transform: {base.get('transform')!r}: expected one "
                            f"of {', '.join(TRANSFORMS)}")
    if conf["train.baselines"] and task == "multiclass":
        raise ConfError(f"{origin}: gate.baselines: domain baselines are scores of binary or regression models")
    try:
        check_backend(conf["train.backend"], task)
    except ValueError as exc:
        raise ConfError(f"{origin}: {_spec_key('train.backend')}: {exc}") from None
    tasks.get_task(task)
