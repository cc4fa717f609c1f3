"""Synthetic landing data: layout, determinism, exact manifests, realistic skew, Spark parity.

The manifest is checked against the files with a small classifier written here from the schema
YAML files alone (no lakeloop code), so that a generator bug cannot hide behind a shared helper.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from lakeloop.errors import EXIT_USAGE
from lakeloop_apps.recommender.datagen import KINDS, day_range, generate, generate_day, spark_runner

ROOT = Path(__file__).resolve().parents[1]
DATE = "2026-11-01"
PARAMS = dict(events=3000, users=200, items=120, seed=11, bad_fraction=0.1, parts=3)


# -- an independent reader of the contract --------------------------------------------------------------

def _schema(source: str) -> dict:
    return yaml.safe_load((ROOT / "schemas" / f"{source}.yaml").read_text())


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_INT_TEXT = re.compile(r"^-?\d+$")
_INTEGRAL_TEXT = re.compile(r"^-?\d+\.0+$")


def _cast(type_: str, value, from_csv: bool):
    """(status, typed value): status is ok, mixed (valid after cleansing) or wrong."""
    if type_ == "string":
        return ("ok", value) if isinstance(value, str) else ("wrong", None)
    if type_ == "timestamp":
        if isinstance(value, str) and _ISO.match(value):
            try:
                return "ok", dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
            except ValueError:
                pass
        return "wrong", None
    if isinstance(value, bool):
        return "wrong", None
    if isinstance(value, str):
        text_status = "ok" if from_csv else "mixed"
        if type_ in ("int", "long"):
            if _INT_TEXT.match(value):
                return text_status, int(value)
            if _INTEGRAL_TEXT.match(value):
                return "mixed", int(float(value))
            return "wrong", None
        try:
            number = float(value)
        except ValueError:
            return "wrong", None
        return text_status, number
    if type_ in ("int", "long"):
        return ("ok", value) if isinstance(value, int) else ("wrong", None)
    return ("ok", float(value)) if isinstance(value, (int, float)) else ("wrong", None)


def _constraint_broken(col: dict, value) -> bool:
    if "range" in col:
        lo, hi = col["range"]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return True
    if "enum" in col and value not in col["enum"]:
        return True
    return "regex" in col and re.search(col["regex"], str(value)) is None


def _defects(record: dict, schema: dict, from_csv: bool) -> set[str]:
    found = set()
    names = [c["name"] for c in schema["columns"]]
    if set(record) - set(names):
        found.add("unknown_field" if schema.get("unknown_fields") == "keep" else "rejected_field")
    for col in schema["columns"]:
        value = record.get(col["name"])
        if value is None or (from_csv and value == ""):
            if not col.get("nullable", True) and "default" not in col:
                found.add("missing_required")
            continue
        status, typed = _cast(col["type"], value, from_csv)
        if status == "wrong":
            found.add("wrong_type")
            continue
        if status == "mixed":
            found.add("mixed_type_number")
        if _constraint_broken(col, typed):
            found.add("out_of_range")
    return found


def _parse(line: str, schema: dict, header: list[str] | None):
    """The record of a line, or None when it is malformed."""
    if header is not None:
        fields = next(csv.reader([line]))
        return dict(zip(header, fields, strict=True)) if len(fields) == len(header) else None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _read_lines(path: Path) -> list[str]:
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    assert raw.endswith(b"\n")
    return raw.decode("utf-8").split("\n")[:-1]


def classify(landing: Path, source: str, files: list[str]) -> tuple[Counter, list[tuple[int, str, dict | None]]]:
    """Kind of every line of a source-day, in file order; also (part, kind, record) per line."""
    schema = _schema(source)
    kinds: Counter = Counter()
    rows = []
    seen: dict[str, str] = {}
    for part, rel in enumerate(files):
        lines = _read_lines(landing / rel)
        header = None
        if rel.endswith(".csv"):
            header, lines = lines[0].split(","), lines[1:]
        for line in lines:
            if line in seen:
                assert seen[line] == "good", f"a duplicate copies a {seen[line]} line: {line}"
                kind, record = "duplicate", None
            else:
                record = _parse(line, schema, header)
                found = {"malformed"} if record is None else _defects(record, schema, header is not None)
                assert len(found) <= 1, f"{source}: more than one defect {found}: {line}"
                kind = found.pop() if found else "good"
                seen[line] = kind
            kinds[kind] += 1
            rows.append((part, kind, record))
    return kinds, rows


# -- fixtures ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def day(tmp_path_factory):
    landing = tmp_path_factory.mktemp("landing")
    return landing, generate_day(landing, DATE, **PARAMS)


def _digests(landing: Path) -> dict[str, str]:
    return {str(p.relative_to(landing)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(landing.rglob("*")) if p.is_file()}


# -- layout --------------------------------------------------------------------------------------------

def test_layout_formats_and_atomic_names(day):
    landing, manifest = day
    names = sorted(str(p.relative_to(landing)) for p in landing.rglob("*") if p.is_file())
    assert names == [
        f"_manifests/dt={DATE}.json",
        f"events/dt={DATE}/part-00000.jsonl",
        f"events/dt={DATE}/part-00001.jsonl.gz",
        f"events/dt={DATE}/part-00002.jsonl",
        f"items/dt={DATE}/part-00000.csv",
        f"users/dt={DATE}/part-00000.jsonl",
    ]
    assert not [p for p in landing.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert json.loads((landing / "_manifests" / f"dt={DATE}.json").read_text()) == manifest
    gz = _read_lines(landing / f"events/dt={DATE}/part-00001.jsonl.gz")
    assert len(gz) == manifest["sources"]["events"]["files"][1]["rows"]
    header = _read_lines(landing / f"items/dt={DATE}/part-00000.csv")[0]
    assert header == ",".join(c["name"] for c in _schema("items")["columns"])


def test_good_rows_follow_the_contract(day):
    landing, manifest = day
    _, rows = classify(landing, "events", [f["path"] for f in manifest["sources"]["events"]["files"]])
    good = [r for _, kind, r in rows if kind == "good"]
    assert {r["type"] for r in good} == {"view", "click", "add_to_cart", "purchase", "like", "review"}
    assert all(r["ts"].startswith(DATE) and r["ts"].endswith("Z") for r in good)
    reviews = [r for r in good if r["type"] == "review"]
    assert reviews and all(1 <= r["rating"] <= 5 and r["review_text"] for r in reviews)
    assert all("rating" not in r for r in good if r["type"] != "review")
    # quantity has a default: only carts and purchases spell it out
    assert all(("quantity" in r) == (r["type"] in ("add_to_cart", "purchase")) for r in good)


@pytest.mark.parametrize("source", ["events", "users", "items"])
def test_row_renderer_matches_the_column_renderer(source):
    """Bad rows are rendered row by row, good rows column-wise: both must give the same line."""
    import numpy as np
    from lakeloop_apps.recommender.datagen.generator import SOURCES, Task, _frame, make_plan
    from lakeloop_apps.recommender.datagen.render import join_tokens, render_lines, rows_tokens
    from lakeloop_apps.recommender.datagen.world import rng_for

    plan = make_plan(**dict(PARAMS, parts=1))
    fmt = SOURCES[source][1]
    task = Task("/unused", DATE, source, 0)
    n = min(plan.rows(source), 500)
    frame = _frame(plan, task, 0, rng_for(1, 2), 0, n)
    rows = np.arange(n)
    by_column = render_lines(plan.schemas[source], frame, fmt).to_pylist()
    by_row = [join_tokens(t, fmt) + "\n" for t in rows_tokens(plan.schemas[source], frame, rows, fmt)]
    assert by_row == by_column


# -- the manifest is the truth -------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["events", "users", "items"])
def test_manifest_counts_match_an_independent_classification(day, source):
    landing, manifest = day
    entry = manifest["sources"][source]
    for f in entry["files"]:
        data = (landing / f["path"]).read_bytes()
        assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    kinds, rows = classify(landing, source, [f["path"] for f in entry["files"]])
    assert dict(kinds) == {k: v for k, v in entry["counts"].items() if v}
    assert entry["rows"] == len(rows) == sum(f["rows"] for f in entry["files"]) == PARAMS[source]
    assert [f["rows"] for f in entry["files"]] == [sum(1 for p, _, _ in rows if p == i)
                                                   for i in range(len(entry["files"]))]
    bad = len(rows) - entry["counts"]["good"]
    assert bad == round(PARAMS["bad_fraction"] * len(rows))
    assert entry["expected_silver"] == kinds["good"] + kinds["unknown_field"] + kinds["mixed_type_number"]
    assert entry["expected_quarantine"] == {k: kinds[k] for k in
                                            ("malformed", "wrong_type", "missing_required", "out_of_range",
                                             "duplicate")}
    assert sum(entry["expected_quarantine"].values()) + entry["expected_silver"] == entry["rows"]


def test_parts_of_many_chunks(tmp_path):
    params = dict(PARAMS, parts=2, chunk_rows=150)  # parts of 1500 events and 200 users: 10 and 2 chunks
    manifest = generate_day(tmp_path, DATE, **params)
    for source in ("events", "users"):
        entry = manifest["sources"][source]
        kinds, rows = classify(tmp_path, source, [f["path"] for f in entry["files"]])
        assert dict(kinds) == {k: v for k, v in entry["counts"].items() if v}
        assert len(rows) - kinds["good"] == round(PARAMS["bad_fraction"] * len(rows))
        key = "event_id" if source == "events" else "user_id"
        keys = [r[key] for _, kind, r in rows if kind == "good"]
        assert len(keys) == len(set(keys)) == entry["counts"]["good"]


def test_every_kind_appears_and_unknown_fields_only_where_kept(day):
    landing, manifest = day
    events = manifest["sources"]["events"]["counts"]
    assert all(events[k] > 0 for k in KINDS)
    assert manifest["sources"]["items"]["counts"]["unknown_field"] == 0  # items reject unknown fields
    assert manifest["seed"] == PARAMS["seed"] and manifest["params"]["bad_fraction"] == PARAMS["bad_fraction"]


@pytest.mark.parametrize("source,key", [("events", "event_id"), ("users", "user_id"), ("items", "item_id")])
def test_bad_rows_never_share_a_key(day, source, key):
    landing, manifest = day
    _, rows = classify(landing, source, [f["path"] for f in manifest["sources"][source]["files"]])
    keys = [str(r[key]).removesuffix(".0") for _, kind, r in rows
            if kind not in ("malformed", "duplicate") and r.get(key) not in (None, "")]
    assert len(keys) == len(set(keys))


def test_duplicates_cross_parts(day):
    landing, manifest = day
    first_part: dict[str, int] = {}
    crossed = 0
    for part, f in enumerate(manifest["sources"]["events"]["files"]):
        for line in _read_lines(landing / f["path"]):
            if line in first_part and first_part[line] < part:
                crossed += 1
            first_part.setdefault(line, part)
    assert crossed > 0


# -- realism -------------------------------------------------------------------------------------------

def test_popularity_taste_funnel_and_daily_curve(day):
    landing, manifest = day
    _, rows = classify(landing, "events", [f["path"] for f in manifest["sources"]["events"]["files"]])
    good = [r for _, kind, r in rows if kind == "good"]
    views = Counter(r["item_id"] for r in good if r["type"] == "view")
    top = max(1, PARAMS["items"] // 100)
    top_share = sum(c for _, c in views.most_common(top)) / sum(views.values())
    assert top_share > 0.10, top_share  # uniform popularity would give ~0.01

    items = {int(r["item_id"]): r["category"] for r in csv.DictReader(
        _read_lines(landing / manifest["sources"]["items"]["files"][0]["path"])) if r["item_id"].isdigit()}
    by_user: dict[int, Counter] = {}
    for r in good:
        if r["item_id"] in items:
            by_user.setdefault(r["user_id"], Counter())[items[r["item_id"]]] += 1
    heavy = [c for c in by_user.values() if sum(c.values()) >= 20]
    assert heavy
    concentration = sum(sum(n for _, n in c.most_common(3)) / sum(c.values()) for c in heavy) / len(heavy)
    assert concentration > 0.5, concentration  # 3 of 29 categories: ~0.1 without taste

    seen_in_session: dict[str, set] = {}
    purchases = repeat = 0
    for r in good:
        items_so_far = seen_in_session.setdefault(r["session_id"], set())
        if r["type"] == "purchase":
            purchases += 1
            repeat += r["item_id"] in items_so_far
        items_so_far.add(r["item_id"])
    assert purchases and repeat / purchases > 0.4  # bought after looking at it

    hours = Counter(int(r["ts"][11:13]) for r in good)
    assert sum(hours[h] for h in (19, 20, 21)) > 3 * sum(hours[h] for h in (2, 3, 4))


def _served(best: bool, n: int = 10) -> dict[int, list[int]]:
    """Per user of PARAMS, the ``n`` items of highest (or lowest) true affinity, best first."""
    import numpy as np
    from lakeloop_apps.recommender.datagen.response import affinity
    from lakeloop_apps.recommender.datagen.world import world

    w = world(PARAMS["seed"], PARAMS["users"], PARAMS["items"])
    items = np.arange(PARAMS["items"])
    out = {}
    for u in range(PARAMS["users"]):
        a = affinity(w, np.full(len(items), u), items)
        order = np.argsort(-a if best else a, kind="stable")[:n]
        out[u + 1] = [int(i) + 1 for i in order]
    return out


def test_exposures_get_reactions_in_a_part_of_their_own(tmp_path):
    params = dict(PARAMS, bad_fraction=0.0)
    shown = _served(best=True)
    plain = generate_day(tmp_path / "plain", DATE, **params)
    manifest = generate_day(tmp_path / "a", DATE, exposures=shown, served={"served_date": "2026-10-31"}, **params)
    reactions = manifest["reactions"]
    files = [f["path"] for f in manifest["sources"]["events"]["files"]]
    # the regular parts are untouched; the reaction part comes after them
    assert files[:-1] == [f["path"] for f in plain["sources"]["events"]["files"]]
    assert files[-1] == reactions["path"] == f"events/dt={DATE}/part-{PARAMS['parts']:05d}.jsonl.gz"
    for rel in files[:-1]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "plain" / rel).read_bytes()
    kinds, rows = classify(tmp_path / "a", "events", [reactions["path"]])
    assert kinds == Counter(good=reactions["events"])  # reactions are all good lines
    records = [r for _, _, r in rows]
    assert all(r["item_id"] in shown[r["user_id"]] and r["ts"].startswith(DATE) for r in records)
    by_type = Counter(r["type"] for r in records)
    assert (by_type["view"], by_type["click"], by_type["purchase"]) == (
        reactions["views"], reactions["clicks"], reactions["purchases"])
    assert reactions["events"] == reactions["views"] + reactions["clicks"] + reactions["purchases"] == len(records)
    pairs = {t: Counter((r["user_id"], r["item_id"]) for r in records if r["type"] == t) for t in by_type}
    assert max(c for p in pairs.values() for c in p.values()) == 1  # one view/click/purchase per served item
    assert set(pairs["purchase"]) <= set(pairs["click"]) <= set(pairs["view"])  # a funnel per served item
    assert reactions["served_items"] == sum(map(len, shown.values())) and reactions["exposed_users"] == 200
    assert reactions["ctr"] == round(reactions["clicks"] / reactions["served_items"], 6)
    assert reactions["served_date"] == "2026-10-31"
    assert manifest["sources"]["events"]["rows"] == PARAMS["events"] + reactions["events"]
    assert manifest["sources"]["events"]["expected_silver"] == PARAMS["events"] + reactions["events"]
    # served items the users like earn more clicks than items they do not (a better model, more reactions)
    worse = generate_day(tmp_path / "b", DATE, exposures=_served(best=False), **params)["reactions"]
    assert reactions["ctr"] > 2 * worse["ctr"] and reactions["purchases"] > 2 * worse["purchases"]
    again = generate_day(tmp_path / "c", DATE, exposures=shown, served={"served_date": "2026-10-31"}, **params)
    assert again == manifest and _digests(tmp_path / "c") == _digests(tmp_path / "a")
    with pytest.raises(ValueError, match="item ids outside"):
        generate_day(tmp_path / "d", DATE, exposures={1: [999]}, **params)


# -- determinism and idempotency -----------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_other_bytes(day, tmp_path):
    landing, _ = day
    generate_day(tmp_path / "again", DATE, **PARAMS)
    assert _digests(tmp_path / "again") == _digests(landing)
    generate_day(tmp_path / "other", DATE, **dict(PARAMS, seed=12))
    other = _digests(tmp_path / "other")
    assert other.keys() == _digests(landing).keys()
    assert all(other[k] != v for k, v in _digests(landing).items())


def test_rerun_is_idempotent_and_removes_parts_of_a_larger_run(tmp_path):
    landing = tmp_path / "landing"
    generate_day(landing, DATE, **dict(PARAMS, parts=5))
    (landing / f"events/dt={DATE}/.part-00009.jsonl.0badc0de.tmp").write_text("half")
    manifest = generate_day(landing, DATE, **PARAMS)
    generate_day(tmp_path / "fresh", DATE, **PARAMS)
    assert _digests(landing) == _digests(tmp_path / "fresh")
    assert len(manifest["sources"]["events"]["files"]) == 3


def test_days_end_with_the_run_date_and_ids_differ_between_days(tmp_path):
    dates = day_range(DATE, 2)
    assert dates == ["2026-10-31", DATE]
    manifests = generate(tmp_path, dates, **dict(PARAMS, events=400))
    assert [m["date"] for m in manifests] == dates
    ids = [{json.loads(line)["event_id"] for f in m["sources"]["events"]["files"]
            for line in _read_lines(tmp_path / f["path"]) if line.startswith('{"event_id":"e')
            and line.endswith("}")} for m in manifests]
    assert ids[0] and ids[1] and not ids[0] & ids[1]


def test_parameters_are_checked(tmp_path):
    with pytest.raises(ValueError, match="bad_fraction"):
        generate_day(tmp_path, DATE, **dict(PARAMS, bad_fraction=1.5))
    with pytest.raises(ValueError, match="users"):
        generate_day(tmp_path, DATE, **dict(PARAMS, users=0))
    with pytest.raises(ValueError, match="landing"):
        generate_day("s3://bucket/landing", DATE, **PARAMS)


# -- Spark ---------------------------------------------------------------------------------------------

def test_spark_tasks_write_the_same_bytes_as_in_process(spark, tmp_path):
    params = dict(PARAMS, events=900)
    local = generate_day(tmp_path / "local", DATE, **params)
    assert generate_day(tmp_path / "spark", DATE, runner=spark_runner(spark), **params) == local
    assert _digests(tmp_path / "spark") == _digests(tmp_path / "local")


def test_job_writes_days_from_conf_and_flags(spark, conf, tmp_path):
    from jobs.datagen import main

    landing = Path(conf["landing"])
    rc = main(["--date", DATE, "--days", "2", "--events", "500", "--bad-fraction", "0.2",
               "--set", f"landing={landing}", "--set", f"warehouse={tmp_path / 'warehouse'}"])
    assert rc == 0
    for date in day_range(DATE, 2):
        manifest = json.loads((landing / "_manifests" / f"dt={date}.json").read_text())
        assert manifest["sources"]["events"]["rows"] == 500
        assert manifest["sources"]["users"]["rows"] == conf["datagen.users"]
        assert manifest["params"]["bad_fraction"] == 0.2
        kinds, _ = classify(landing, "events", [f["path"] for f in manifest["sources"]["events"]["files"]])
        assert kinds["good"] == manifest["sources"]["events"]["counts"]["good"] == 400
    assert main(["--date", DATE, "--bad-fraction", "2", "--set", f"landing={landing}"]) == EXIT_USAGE
