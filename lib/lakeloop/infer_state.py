"""What an ``infer`` run of a date was made from, so that a re-run from the same input is skipped.

A finished run leaves ``<warehouse>/_reports/infer/<model name>/dt=<date>.json``: its input key, the tables
it read, the fingerprint of the date's partition of ``infer.table`` it wrote and the serving version it
switched to.  A later run of the date is skipped, before any data is read, when

* the input key is the same: the model version and its artifacts, the scoring spec, the ``infer.*`` settings,
  the training set's feature specs, and the files of every ``dt`` partition up to the day after the run date
  (a feature's window never reads later) of every table the run read, from the Delta logs;
* the date's partition of ``infer.table`` is still the one that run wrote;
* the serving store still serves that run's version.

The tables a run reads are the features' inputs, the rows' table or the tables its SQL names, and the tables a
generator plugin reads through the ``read`` it is given (recorded during the run).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakeloop.lake import Lake
from lakeloop.reports import Documents

if TYPE_CHECKING:
    from lakeloop.conf import Conf

__all__ = ["InferState"]


def _table_prints(lake: Lake, tables: list[str], horizon: str) -> list[Any]:
    return [[table, lake.partitions_between(lake.partition_state(table), None, horizon)]
            for table in sorted(set(tables))]


@dataclass
class InferState:
    """The re-run decision of one model's ``infer`` of ``run_date``."""

    conf: Conf
    model_name: str
    run_date: dt.date

    @property
    def _docs(self) -> Documents:
        return Documents.reports(Lake.from_conf(self.conf), "infer")

    @property
    def _name(self) -> str:
        return f"{self.model_name}/dt={self.run_date.isoformat()}.json"

    def key(self, identity: list[Any], tables: list[str]) -> str:
        """The input key of a run described by ``identity`` (model, specs, settings) that reads ``tables``."""
        lake = Lake.from_conf(self.conf)
        horizon = (self.run_date + dt.timedelta(days=1)).isoformat()
        payload = json.dumps([self.run_date.isoformat(), identity, _table_prints(lake, tables, horizon)],
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    def _output(self) -> str | None:
        lake = Lake.from_conf(self.conf)
        return lake.partition_state(self.conf["infer.table"])[1].get(self.run_date.isoformat())

    def done_before(self, identity: list[Any], current_serving: str | None) -> dict[str, Any] | None:
        """The stored result of the run that scored this date from the same input, else None."""
        stored = self._docs.read_json(self._name)
        if not isinstance(stored, dict) or not isinstance(stored.get("tables"), list):
            return None
        if stored.get("input_key") != self.key(identity, stored["tables"]) or stored.get("output") != self._output():
            return None
        if current_serving is None or stored.get("serving_version") != current_serving:
            return None
        return stored.get("result")

    def record(self, identity: list[Any], tables: list[str], serving_version: str, result: dict[str, Any]) -> None:
        """Write the marker of a finished run."""
        self._docs.write_json(self._name, {"input_key": self.key(identity, tables), "tables": sorted(set(tables)),
                                           "output": self._output(), "serving_version": serving_version,
                                           "result": result})
