"""Yesterday's served lists, read back for the closed-loop simulation.

:func:`served_lists` reads the top ``infer.top_n`` items per user of ``infer.table`` for a date (what
``infer`` pushed to the serving store); ``datagen`` (with ``datagen.closed_loop``) hands them to
:func:`lakeloop_apps.recommender.datagen.generate` as exposures of the next day.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from lakeloop.lake import Lake

if TYPE_CHECKING:
    from lakeloop.conf import Conf
    from pyspark.sql import SparkSession

__all__ = ["Served", "served_lists"]

log = logging.getLogger("lakeloop.datagen.served")  # under the engine's "lakeloop" logger, as the job logs


class Served(dict):
    """User id -> item ids served, best first; ``info`` says where they came from (manifest figures)."""

    def __init__(self, lists: dict[int, list[int]], info: dict[str, Any]) -> None:
        super().__init__(lists)
        self.info = info


def served_lists(spark: SparkSession, conf: Conf, served_date: dt.date, users: int, items: int) -> Served | None:
    """The ranked top-N lists of ``infer.table`` for ``served_date``; None when it has no such partition.

    Pairs outside the generated shop (user id above ``users``, item id above ``items``) are left out
    and counted in ``info["outside_world"]``.
    """
    from pyspark.sql import functions as F

    lake = Lake.from_conf(conf)
    uri = lake.uri(conf["infer.table"])
    if not lake.exists(uri):
        return None
    day = served_date.isoformat()
    rows = (lake.read(spark, uri, where=f"dt = '{day}'").where(F.col("rank") <= conf["infer.top_n"])
            .select("user_id", "item_id", "rank", "model_version").orderBy("user_id", "rank").collect())
    if not rows:
        return None
    lists: dict[int, list[int]] = {}
    outside = 0
    for r in rows:
        if 1 <= r.user_id <= users and 1 <= r.item_id <= items:
            lists.setdefault(int(r.user_id), []).append(int(r.item_id))
        else:
            outside += 1
    if outside:
        log.warning("closed loop: %d served pairs of %s are outside the generated shop (%d users, %d items)",
                    outside, day, users, items)
    versions = sorted({str(r.model_version) for r in rows})
    return Served(lists, {"served_date": day, "served_model_version": ",".join(versions),
                          "outside_world": outside})
