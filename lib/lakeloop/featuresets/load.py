"""Loading the spec files: ``<spec_dir>/features/*.yaml`` and ``<spec_dir>/training_sets/*.yaml``.

``features.spec_dir`` is the folder (default: the conf directory).  String values may reference
conf keys as ``${conf:features.lookback_days}``: a whole-value reference keeps the conf value's
type (a list stays a list), an embedded one is replaced by its text (``${conf:x}d``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lakeloop.conf import ConfError
from lakeloop.featuresets import sets, training
from lakeloop.featuresets.spec import Node, Specs

if TYPE_CHECKING:
    from lakeloop.conf import Conf

__all__ = ["spec_dir", "read_spec_file", "load_specs"]

_CONF_REF = re.compile(r"\$\{conf:([A-Za-z0-9_.]+)\}")


def spec_dir(conf: Conf) -> Path:
    """``features.spec_dir`` or the conf directory."""
    configured = conf.get("features.spec_dir")
    if configured:
        return Path(configured)
    if conf.conf_dir is None:
        raise ConfError("features.spec_dir: not set and the conf has no directory")
    return Path(conf.conf_dir)


def _substitute(value: Any, conf: Conf | None, file: str, path: str) -> Any:
    if isinstance(value, Mapping):
        return {k: _substitute(v, conf, file, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, conf, file, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${conf:" not in value:
        return value

    def lookup(key: str) -> Any:
        if conf is None or key not in conf:
            raise ConfError(f"{file}: {path}: ${{conf:{key}}}: no such conf key")
        return conf[key]

    whole = _CONF_REF.fullmatch(value.strip())
    if whole:
        return lookup(whole.group(1))
    return _CONF_REF.sub(lambda m: str(lookup(m.group(1))), value)


def read_spec_file(path: Path, conf: Conf | None) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfError(f"{path}: top level must be a mapping")
    return _substitute(data, conf, str(path), "")


def load_specs(conf: Conf | None = None, directory: str | Path | None = None) -> Specs:
    """Read and validate every feature set and training set; raises :class:`ConfError`."""
    root = Path(directory) if directory is not None else spec_dir(conf)
    feature_files = sorted((root / "features").glob("*.yaml"))
    parsed = {}
    for path in feature_files:
        fs = sets.parse_feature_set(path.stem, Node(read_spec_file(path, conf), str(path)))
        parsed[fs.name] = fs
    trained = {}
    for path in sorted((root / "training_sets").glob("*.yaml")):
        ts = training.parse_training_set(path.stem, Node(read_spec_file(path, conf), str(path)), parsed)
        trained[ts.name] = ts
    tables = [s.table for s in parsed.values() if s.materialize] + [t.table for t in trained.values()]
    dupes = sorted({t for t in tables if tables.count(t) > 1})
    if dupes:
        raise ConfError(f"{root}: gold table {dupes[0]} is written by more than one feature or training set")
    return Specs(sets=parsed, training=trained, directory=root)
