"""The real-time view changing as events land: small event files in waves, the view read after each.

The demo's last step: for one user, ``waves`` small files of new events are landed one after the
other under ``<landing>/events/dt=<date>/``; after each, the stream runs (``availableNow``, both
queries) and the user's real-time view is read from the serving store.  The events of all waves fall
in one window when they can (event time: now, or the day after ``date`` when that is later, so the
watermark of earlier data never drops them), so the counts grow wave by wave.

>>> views = realtime_waves(spark, conf, "2026-11-02", user=1)  # doctest: +SKIP
>>> [v["events"] for v in views]  # doctest: +SKIP
[3, 6]
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakeloop.serving import open_store

if TYPE_CHECKING:
    from lakeloop.conf import Conf
    from pyspark.sql import SparkSession

__all__ = ["KINDS", "wave_lines", "land_wave", "realtime_waves", "describe"]

#: event types of one wave, in order (each wave: a view, a click and a view of three items)
KINDS = ("view", "click", "view")


def _event_time(date: str, now: dt.datetime | None = None) -> dt.datetime:
    """Now (UTC, whole seconds), or midnight after ``date`` when that is later."""
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    after = dt.datetime.combine(dt.date.fromisoformat(date) + dt.timedelta(days=1), dt.time(), dt.UTC)
    return max(now, after)


def wave_lines(user: int, wave: int, at: dt.datetime, stamp: int) -> list[str]:
    """The JSON lines of one wave: :data:`KINDS` events of ``user`` on items 1, 2, 3, ``wave``
    seconds after ``at``; event ids are unique per ``stamp`` (e.g. epoch milliseconds) and wave."""
    ts = (at + dt.timedelta(seconds=wave)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [json.dumps({"event_id": f"e{(stamp << 12) | (wave << 6) | i:016x}", "user_id": user,
                        "item_id": 1 + i, "type": kind, "ts": ts}) for i, kind in enumerate(KINDS)]


def land_wave(landing: str | Path, date: str, name: str, lines: list[str]) -> Path:
    """Write ``lines`` to ``<landing>/events/dt=<date>/<name>`` atomically (hidden file, rename)."""
    folder = Path(landing) / "events" / f"dt={date}"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    tmp.write_text("".join(line + "\n" for line in lines))
    return tmp.rename(folder / name)


def realtime_waves(spark: SparkSession, conf: Conf, date: str, *, user: int = 1, waves: int = 2,
                   now: dt.datetime | None = None) -> list[dict[str, Any] | None]:
    """Land ``waves`` waves of events for ``user``, run the stream after each and return the user's
    real-time view after each wave (``None`` where the store holds none).

    Raises
    ------
    ValueError
        When the landing area is not on the local file system (the waves are written with Python).
    """
    from lakeloop.streaming import run_stream

    landing = conf.path("landing")
    if "://" in landing and not landing.startswith("file:"):
        raise ValueError(f"landing {landing}: the demo waves are written to a local landing folder only")
    landing = landing.removeprefix("file://").removeprefix("file:")
    at = _event_time(date, now)
    stamp = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    views: list[dict[str, Any] | None] = []
    store = open_store(conf)
    try:
        for wave in range(waves):
            land_wave(landing, date, f"part-realtime-{stamp}-{wave}.jsonl", wave_lines(user, wave, at, stamp))
            run_stream(spark, conf, "events", trigger="availableNow")
            views.append(store.get_realtime(user))
    finally:
        store.close()
    return views


def describe(view: dict[str, Any] | None) -> str:
    """One line for a real-time view: window and counts."""
    if not view:
        return "no real-time view"
    counts = ", ".join(f"{k}={view.get(k, 0)}" for k in ("events", "views", "clicks", "carts", "purchases"))
    return f"window {view['window_start']} .. {view['window_end']}: {counts}"

