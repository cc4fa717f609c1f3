"""The ``serving`` job: look after the serving store's versions (no Spark).

    ./spark-submit.sh serving status             # every version with its state, keys and times
    ./spark-submit.sh serving rollback [--to V]  # serve the previous complete version (or V) again
    ./spark-submit.sh serving gc [--grace-seconds S]
    ./spark-submit.sh serving status --feature-set user_activity   # a materialized feature set's versions

``rollback`` switches ``current`` in one atomic step (:meth:`ServingStore.rollback`), so readers see the
old or the new version, never a mix; it deletes nothing.  ``gc`` removes committed versions beyond
``serving.keep_versions``, finishes removals a killed process left, and removes versions still
``loading`` longer than ``serving.loading_grace_seconds`` after they began (a killed ``infer``).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from lakeloop.job import JobResult

if TYPE_CHECKING:
    from lakeloop.serving import ServingStore
    from lakeloop.session import RunContext

__all__ = ["DESCRIPTION", "NEEDS_SPARK", "add_arguments", "run", "status"]

DESCRIPTION = "serving store versions: status, rollback to the previous complete version, gc of stale loads"
NEEDS_SPARK = False
ACTIONS = ("status", "rollback", "gc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ACTION`` (status, rollback, gc), ``--to`` for rollback, ``--grace-seconds`` for gc, ``--json``."""
    parser.add_argument("action", choices=ACTIONS, help="status | rollback | gc")
    parser.add_argument("--to", default=None, metavar="VERSION",
                        help="rollback: the committed version to serve (default: the one before the current)")
    parser.add_argument("--grace-seconds", type=int, default=None,
                        help="gc: remove loads begun longer ago than this (default serving.loading_grace_seconds)")
    parser.add_argument("--feature-set", default=None, metavar="NAME",
                        help="the versions of feature set NAME's materialized rows (the materialize job) instead "
                             "of the predictions'")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def status(store: ServingStore) -> dict[str, Any]:
    """The current version and every version record (state, keys, start and commit times)."""
    current = store.current_version()
    return {"namespace": store.namespace, "current": current,
            "versions": [{"version": r.version, "state": r.state, "keys": r.count, "current": r.version == current,
                          "started_at": _iso(r.started_at), "committed_at": _iso(r.committed_at)}
                         for r in store.records()]}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _gc(store: ServingStore, grace: int | None) -> dict[str, Any]:
    stale = store.stale_loads(grace)
    for version in stale:  # an explicit grace: these first, then the usual collection
        store.abort_load(version)
    removed = store.collect_garbage()
    return {"removed": sorted(set(stale) | set(removed)), "stale_loads": stale, **status(store)}


def _print(action: str, result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True))
        return
    if action == "rollback":
        print(f"serving: rolled back {result['from']} -> {result['to']}")
    elif action == "gc":
        print(f"serving: removed {', '.join(result['removed']) or 'nothing'}")
    print(f"namespace {result['namespace']}, current {result['current']}")
    print(f"{'version':32} {'state':10} {'keys':>10}  {'started':20}  committed")
    for v in result["versions"]:
        mark = " *" if v["current"] else ""
        print(f"{v['version'] + mark:32} {v['state']:10} {v['keys']:>10,}  {v['started_at'] or '-':20}  "
              f"{v['committed_at'] or '-'}")


def run(ctx: RunContext, spark: None, args: argparse.Namespace) -> JobResult[dict[str, Any]]:
    """Carry out ``args.action`` on the store of ``serving.*`` and print the versions."""
    from lakeloop.materialize import feature_store
    from lakeloop.serving import open_store

    chosen = getattr(args, "feature_set", None)
    with feature_store(ctx.conf, chosen) if chosen else open_store(ctx.conf) as store:
        if args.action == "rollback":
            before, after = store.rollback(args.to)
            ctx.log.warning("serving rollback: %s -> %s", before, after)
            result = {"from": before, "to": after, **status(store)}
        elif args.action == "gc":
            result = _gc(store, args.grace_seconds)
        else:
            result = status(store)
    _print(args.action, result, args.json)
    return JobResult(result, {k: v for k, v in result.items() if k != "versions"})
