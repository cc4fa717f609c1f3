"""The recommender as an app: its declarative gold tables equal the hand-written ones.

Seeded random silver data (users, items with several catalog records, items missing from the
catalog, events of every type over 40 days) go through both paths for two run dates:
``lakeloop_apps.recommender.reference`` (the hand-written code) and the conf files under
``conf/features`` and ``conf/training_sets`` computed by :mod:`lakeloop.featuresets`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
from lakeloop.featuresets import build, load_specs, training_frame
from lakeloop_apps.recommender import reference
from pyspark.testing import assertDataFrameEqual

from tests.test_features import EVENTS_SCHEMA, ITEMS_SCHEMA

UTC = dt.UTC
TYPES = ["view", "view", "view", "click", "add_to_cart", "purchase", "like", "review"]
CATEGORIES = ["toys/lego", "toys/dolls", "books/novel", "garden/tools", None]
START = dt.datetime(2026, 10, 5, tzinfo=UTC)


def seeded_silver(spark, seed: int = 3, n_events: int = 4000, users: int = 60, items: int = 40):
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n_events):
        etype = TYPES[rng.integers(len(TYPES))]
        # whole seconds, so some events share a timestamp (ties are broken by event id)
        ts = START + dt.timedelta(seconds=int(rng.integers(0, 40 * 86400)) // 600 * 600)
        item = int(rng.integers(1, items + 6))  # items above `items` are missing from the catalog
        price = float(rng.integers(1, 500)) if etype == "purchase" else None
        rating = int(rng.integers(1, 6)) if etype == "review" else None
        events.append((f"e{i:016x}", int(rng.integers(1, users + 1)), item, etype, ts, f"s{i % 97}", price,
                       int(rng.integers(1, 3)), rating, None, None, ts.date().isoformat()))
    catalog = []
    for item in range(1, items + 1):
        for k in range(int(rng.integers(1, 4))):  # up to 3 records; some only after the run dates
            updated = START + dt.timedelta(days=int(rng.integers(0, 45)), seconds=item * 7 + k)
            cat = CATEGORIES[(item + k) % len(CATEGORIES)]
            catalog.append((item, cat, float(item + k), "acme", updated, updated.date().isoformat()))
    return spark.createDataFrame(events, EVENTS_SCHEMA), spark.createDataFrame(catalog, ITEMS_SCHEMA)


@pytest.fixture(scope="module")
def silver(spark):
    events, items = seeded_silver(spark)
    return events.cache(), items.cache()


@pytest.fixture(scope="module")
def specs(conf_module):
    return load_specs(conf_module)


@pytest.fixture(scope="module")
def conf_module(tmp_path_factory):
    from lakeloop.conf import load_conf

    from tests.conftest import ROOT

    tmp = tmp_path_factory.mktemp("rec")
    return load_conf("local", [f"warehouse={tmp / 'w'}", f"landing={tmp / 'l'}"], conf_dir=ROOT / "conf")


def reader(events, items):
    frames = {"silver.events": events, "silver.items": items}
    return frames.__getitem__


@pytest.mark.parametrize("run_date", [dt.date(2026, 11, 1), dt.date(2026, 11, 12)])
def test_gold_tables_equal_the_hand_written_path(spark, silver, specs, conf_module, run_date):
    events, items = silver
    params = reference.FeatureParams.from_conf(conf_module)
    end = reference.day_start(run_date) + dt.timedelta(days=1)
    read = reader(events, items)
    want = {
        "user_favours": reference.user_favours(events, items, end, params),
        "item_stats": reference.item_stats(events, items, end, params),
    }
    for name, expected in want.items():
        got = build.feature_frame(specs.sets[name], read, run_date)
        assert got.columns == expected.columns, name
        assert got.count() > 10
        assertDataFrameEqual(got, expected)
    got = training_frame(specs.training["training_set"], specs.sets, read, run_date)
    expected = reference.training_set(events, items, reference.day_start(run_date), params)
    assert got.columns == expected.columns
    assert got.where("label = 1").count() > 5 and got.where("label = 0").count() > 5
    assertDataFrameEqual(got, expected)


def test_numba_affinity_equals_sql(spark, silver, specs):
    events, items = silver
    fs = specs.sets["user_favours"]
    feature = fs.feature("category_affinity")
    numba = dataclasses.replace(feature, opts={**feature.opts, "impl": "numba"})
    fs_numba = dataclasses.replace(fs, features=tuple(numba if f.name == feature.name else f for f in fs.features))
    read = reader(events, items)
    run_date = dt.date(2026, 11, 1)
    sql = build.feature_frame(fs, read, run_date).select("user_id", "category_affinity")
    kernel = build.feature_frame(fs_numba, read, run_date).select("user_id", "category_affinity")
    assertDataFrameEqual(kernel, sql, rtol=1e-12)
