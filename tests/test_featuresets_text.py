"""``kind: bag_of_words`` (a hashed bag of words) and ``include_t`` (a set that sees the rows at ``t``): exact bucket
counts against an independent computation (Python's own tokenising and a pure-Python xxHash64), tf weights, point in
time training rows that see their own text, and the spec errors."""

from __future__ import annotations

import datetime as dt
import re
import struct
from collections import Counter

import pytest
from lakeloop.featuresets import Scope, compute, load_specs, training_frame

from tests.test_featuresets import write_specs

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 10, tzinfo=UTC)
SCHEMA = "k long, text string, ts timestamp, dt string"
LONG_TOKEN = "supercalifragilisticexpialidocious_and_more"  # > 32 bytes: the hash's stripe loop
# (k, text, hours from T0)
ROWS = [(1, "The cat sat on the mat", -30), (1, "A CAT, a hat! 42 cats", -2), (1, None, -1.5),
        (2, f"é {LONG_TOKEN} x", -5), (2, "mat mat mat", -100),  # 100 h ago: outside the 3-day window
        (3, "a b c", -3),  # only one-letter tokens: none kept with min_length 2
        (4, "at t exactly", 0)]
BUCKETS = 8

# -- an independent xxHash64 (the reference algorithm), for Spark's xxhash64(string) -------------------------
_P1, _P2, _P3, _P4, _P5 = (11400714785074694791, 14029467366897019727, 1609587929392839161, 9650029242287828579,
                           2870177450012600261)
_M = 2**64 - 1


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc: int, lane: int) -> int:
    return _rotl((acc + lane * _P2) & _M, 31) * _P1 & _M


def xxh64(data: bytes, seed: int = 42) -> int:
    """XXH64 of ``data`` as a signed 64-bit integer (what Spark's ``xxhash64`` returns; its seed is 42)."""
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _M, (seed + _P2) & _M, seed, (seed - _P1) & _M]
        while i + 32 <= n:
            v = [_round(v[j], struct.unpack_from("<Q", data, i + 8 * j)[0]) for j in range(4)]
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M
        for lane in v:
            h = ((h ^ _round(0, lane)) * _P1 + _P4) & _M
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while i + 8 <= n:
        h = (_rotl(h ^ _round(0, struct.unpack_from("<Q", data, i)[0]), 27) * _P1 + _P4) & _M
        i += 8
    if i + 4 <= n:
        h = (_rotl(h ^ (struct.unpack_from("<I", data, i)[0] * _P1 & _M), 23) * _P2 + _P3) & _M
        i += 4
    for byte in data[i:]:
        h = _rotl(h ^ (byte * _P5 & _M), 11) * _P1 & _M
    for shift, prime in ((33, _P2), (29, _P3)):
        h = (h ^ (h >> shift)) * prime & _M
    h ^= h >> 32
    return h - 2**64 if h >= 2**63 else h


def expected_counts(texts: list[str | None], buckets: int, min_length: int) -> list[float]:
    """Bucket counts by hand: lower-case, runs of letters/digits/_, long enough, ``xxh64 mod buckets``."""
    words = [w for t in texts if t for w in re.findall(r"[^\W]+", t.lower()) if len(w) >= min_length]
    counts = Counter(xxh64(w.encode("utf-8")) % buckets for w in words)
    return [float(counts[b]) for b in range(buckets)]


def text_set(**extra) -> dict:
    return {"source": "silver.notes", "entity": "k", "time": "ts", "window": "3d", "as_of": "start_of_day",
            "features": [{"name": "words", "kind": "bag_of_words", "expr": "text", "buckets": BUCKETS,
                          "min_length": 2},
                         {"name": "tf", "kind": "bag_of_words", "expr": "text", "buckets": 4, "weight": "tf",
                          "where": "k <> 2"},
                         {"name": "n", "kind": "aggregate", "agg": "count"},
                         {"name": "first_bucket", "kind": "derived", "expr": "words[0]"}], **extra}


def reader(spark, rows):
    frame = spark.createDataFrame([(k, text, T0 + dt.timedelta(hours=h), (T0 + dt.timedelta(hours=h)).date()
                                    .isoformat()) for k, text, h in rows], SCHEMA)
    return {"silver.notes": frame}.__getitem__


def test_the_reference_hash_is_sparks_xxhash64(spark):
    tokens = ["cat", "é", LONG_TOKEN, "42", "a" * 37, "mat"]
    got = spark.createDataFrame([(t,) for t in tokens], "w string").selectExpr("w", "xxhash64(w) h").collect()
    assert {r["w"]: r["h"] for r in got} == {t: xxh64(t.encode("utf-8")) for t in tokens}


def test_bucket_counts_and_tf_equal_an_independent_count(spark, tmp_path):
    fs = load_specs(directory=write_specs(tmp_path, {"notes": text_set()})).sets["notes"]
    out = compute(fs, reader(spark, ROWS), Scope(T0))
    words = [f"words_{i}" for i in range(BUCKETS)]
    assert out.columns == ["k", *words, "tf_0", "tf_1", "tf_2", "tf_3", "n", "first_bucket"]
    got = {r["k"]: r for r in out.collect()}
    assert set(got) == {1, 2, 3}  # key 4's row is at t: not before it
    in_window = {1: ["The cat sat on the mat", "A CAT, a hat! 42 cats", None], 2: [f"é {LONG_TOKEN} x"],
                 3: ["a b c"]}
    for k, texts in in_window.items():
        assert [got[k][c] for c in words] == expected_counts(texts, BUCKETS, 2), k
        assert got[k]["first_bucket"] == got[k]["words_0"]
    assert sum(got[1][c] for c in words) == 10  # the cat sat on the mat, cat hat 42 cats (each "a" too short)
    assert [got[3][c] for c in words] == [0.0] * BUCKETS  # no token long enough: zeros, not nulls
    # tf: each bucket's share of the key's tokens (min_length 1 keeps 'a'); key 2 is excluded by the where
    counts = expected_counts(in_window[1], 4, 1)
    assert [got[1][f"tf_{i}"] for i in range(4)] == pytest.approx([c / sum(counts) for c in counts])
    assert [got[2][f"tf_{i}"] for i in range(4)] == [0.0] * 4


def test_include_t_sees_the_rows_at_t_and_a_training_row_its_own_text(spark, tmp_path):
    training = {"label": {"kind": "row", "source": "silver.notes", "entity": ["k"], "time": "ts",
                          "expr": "length(text)", "type": "int"},
                "features": [{"set": "notes", "columns": {"own": "words", "rows": "n"}}], "as_of_join": "range"}
    spec_dir = write_specs(tmp_path, {"notes": text_set(include_t=True, window="1h")}, {"labelled": training})
    specs = load_specs(directory=spec_dir)
    rows = [*ROWS, (5, "late note", 30)]
    gold = {r["k"]: r for r in compute(specs.sets["notes"], reader(spark, rows), Scope(T0)).collect()}
    assert set(gold) == {4} and [gold[4][f"words_{i}"] for i in range(BUCKETS)] == expected_counts(
        ["at t exactly"], BUCKETS, 2)  # the row at t, and no row an hour or more before it
    got = training_frame(specs.training["labelled"], specs.sets, reader(spark, rows), T0.date())
    assert got.columns == ["k", "label", "label_ts", *[f"own_{i}" for i in range(BUCKETS)], "rows"]
    (row,) = got.collect()  # key 4's row, the one row of the run date
    assert row["rows"] == 1 and [row[f"own_{i}"] for i in range(BUCKETS)] == expected_counts(["at t exactly"],
                                                                                             BUCKETS, 2)


@pytest.mark.parametrize("change, message", [
    ({"buckets": 0}, r"features\[0\]\.buckets: expected an integer >= 1, got 0"),
    ({"buckets": 5000}, r"features\[0\]\.buckets: expected an integer from 1 to 4096 .*got 5000"),
    ({"buckets": None}, r"features\[0\]\.buckets: expected an integer from 1 to 4096"),
    ({"expr": None}, r"features\[0\]\.expr: a value is required"),
    ({"weight": "idf"}, r"features\[0\]\.weight: expected one of count, tf, got 'idf'"),
    ({"lowercase": "yes"}, r"features\[0\]\.lowercase: expected true or false"),
    ({"min_length": 0}, r"features\[0\]\.min_length: expected an integer >= 1"),
    ({"group_by": "k"}, r"features\[0\]: unknown key 'group_by' \(allowed: .*buckets"),
    ({"name": "tf", "buckets": 4}, r"features: feature 'tf' is declared twice"),
    ({"name": "n", "buckets": 1}, r"features: feature 'n' is declared twice"),
])
def test_bag_of_words_spec_errors(tmp_path, change, message):
    from lakeloop.conf import ConfError

    spec = text_set()
    first = {k: v for k, v in {**spec["features"][0], **change}.items() if v is not None}
    spec["features"] = [first, *spec["features"][1:]]
    write_specs(tmp_path, {"notes": spec})
    with pytest.raises(ConfError, match=r"notes\.yaml: " + message):
        load_specs(directory=tmp_path)


def test_output_columns_may_not_clash_and_include_t_refuses_numba(tmp_path):
    from lakeloop.conf import ConfError

    spec = text_set()
    spec["features"].append({"name": "words_3", "kind": "aggregate", "agg": "count"})
    write_specs(tmp_path, {"notes": spec})
    with pytest.raises(ConfError, match=r"notes\.yaml: features: output column 'words_3' is produced twice"):
        load_specs(directory=tmp_path)
    spec = text_set(include_t=True)
    spec["features"].append({"name": "d", "kind": "decay", "half_life": "1d", "impl": "numba"})
    write_specs(tmp_path, {"notes": spec})
    with pytest.raises(ConfError, match=r"notes\.yaml: include_t: d uses impl numba"):
        load_specs(directory=tmp_path)


def test_a_batch_partition_labels_each_row_at_its_own_time(spark, tmp_path):
    """``select: partition``: the run date's ``dt`` partition holds a batch of earlier rows; each is a label row at
    its own time, its features computed as of that time (here: its own words, with ``include_t``)."""
    training = {"label": {"kind": "row", "source": "silver.notes", "entity": ["k"], "time": "ts", "select": "partition",
                          "expr": "length(text)", "type": "int"},
                "features": [{"set": "notes", "columns": {"own": "words"}}], "as_of_join": "range"}
    spec_dir = write_specs(tmp_path, {"notes": text_set(include_t=True, window="10m")}, {"batch": training})
    specs = load_specs(directory=spec_dir)
    batch = [(k, text, T0 + dt.timedelta(hours=h), T0.date().isoformat()) for k, text, h in ROWS if -40 <= h <= 0]
    earlier = [(9, "older batch", T0 - dt.timedelta(days=9), "2026-03-01")]
    read = {"silver.notes": spark.createDataFrame(batch + earlier, SCHEMA)}.__getitem__
    got = {(r["k"], r["label_ts"].astimezone(UTC)): r
           for r in training_frame(specs.training["batch"], specs.sets, read, T0.date()).collect()}
    assert sorted(got) == sorted((k, T0 + dt.timedelta(hours=h)) for k, _, h in ROWS if -40 <= h <= 0)  # not key 9
    for (k, t), row in got.items():
        (text,) = [x for j, x, h in ROWS if j == k and T0 + dt.timedelta(hours=h) == t]
        assert row["label"] == (None if text is None else len(text))
        assert [row[f"own_{i}"] for i in range(BUCKETS)] == expected_counts([text], BUCKETS, 2)  # its own words
