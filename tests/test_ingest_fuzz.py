"""Fuzz: a generated landing day corrupted at random (fixed seeds), then ingest + curate.

Corruptions: bit flips, truncation, lines re-encoded (Latin-1, UTF-16), a BOM on line 1, lines split
and joined, and bit flips in the compressed bytes of a ``.gz``.  Checked: nothing raises; every
file that is not rejected has exactly its physical lines in bronze, byte for byte (``value`` or
``_raw``); a rejected file has the rows its ledger and rejected-files rows say; silver + quarantine
= bronze and every quarantine reason is counted.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest
from lakeloop import tables
from lakeloop.curate import REASONS, curate_source
from lakeloop.ingest import BOM, ingest, rejected_table
from lakeloop.ledger import ledger_uri
from lakeloop_apps.recommender.datagen import generate_day
from pyspark.sql import functions as F

DATE = "2026-11-01"
SEEDS = (11, 23, 37)


def _flip_bits(data: bytes, rng: random.Random, n: int = 3) -> bytes:
    out = bytearray(data)
    for _ in range(n):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _reencode(lines: list[bytes], rng: random.Random) -> list[bytes]:
    i = rng.randrange(len(lines))
    text = lines[i].decode("utf-8", "replace") + "é"
    lines[i] = text.encode(rng.choice(["latin-1", "utf-16-le"]), "replace")
    return lines


def _split_join(lines: list[bytes], rng: random.Random) -> list[bytes]:
    i = rng.randrange(len(lines))
    if rng.random() < 0.5 and len(lines[i]) > 2:
        cut = rng.randrange(1, len(lines[i]))
        lines[i:i + 1] = [lines[i][:cut], lines[i][cut:]]
    elif i + 1 < len(lines):
        lines[i:i + 2] = [lines[i] + lines[i + 1]]
    return lines


def corrupt_text(data: bytes, rng: random.Random) -> bytes:
    """Two to five random corruptions of a file's decompressed bytes."""
    for _ in range(rng.randint(2, 5)):
        kind = rng.choice(["flip", "truncate", "encoding", "bom", "split_join"])
        if kind == "flip":
            data = _flip_bits(data, rng)
        elif kind == "truncate" and data:
            data = data[: rng.randrange(len(data))]
        elif kind == "bom":
            data = BOM.encode() + data
        else:
            lines = data.split(b"\n")
            if lines and lines != [b""]:
                lines = _reencode(lines, rng) if kind == "encoding" else _split_join(lines, rng)
            data = b"\n".join(lines)
    return data


def corrupt_day(landing: Path, rng: random.Random) -> None:
    """Corrupt most landing files of the day; a ``.gz`` is damaged inside or in its compressed bytes."""
    for path in sorted(landing.glob(f"*/dt={DATE}/part-*")):
        if rng.random() < 0.2:
            continue
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            if rng.random() < 0.4:
                packed = bytearray(gzip.compress(corrupt_text(gzip.decompress(raw), rng)))
                path.write_bytes(bytes(packed[: rng.randrange(10, len(packed))]) if rng.random() < 0.5
                                 else _flip_bits(bytes(packed), rng, 8))
            else:
                path.write_bytes(gzip.compress(corrupt_text(gzip.decompress(raw), rng)))
        else:
            path.write_bytes(corrupt_text(raw, rng))


def physical_lines(path: Path) -> list[bytes]:
    """The lines Hadoop's line reader sees (\\n, \\r\\n and \\r end a line), a BOM kept on line 1."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_corrupted_day_ingests_and_curates_reconciled(spark, conf, seed):
    landing = Path(conf.path("landing"))
    generate_day(landing, DATE, events=300, users=30, items=20, seed=seed, bad_fraction=0.05, parts=2)
    corrupt_day(landing, random.Random(seed))
    results = {r.source: r for r in ingest(spark, conf, DATE)}  # nothing raises
    loose = conf.with_overrides({"curate.max_quarantine_rate": 1.0})
    seen: dict[str, int] = {"rejected_files": 0, "invalid_encoding": 0}
    for source, result in results.items():
        check_bronze(spark, conf, source, result)
        report = curate_source(spark, loose, source, DATE)
        bronze_rows = tables.read(spark, conf.table_uri(f"bronze.{source}")).count()
        assert report.reconciled and report.bronze_rows == bronze_rows
        assert report.silver_rows + report.quarantine_rows == bronze_rows
        quarantine = tables.read(spark, conf.table_uri(f"silver.{source}_quarantine"))
        counted = {r["reason"]: r["count"] for r in quarantine.groupBy("reason").count().collect()}
        assert counted == {k: v for k, v in report.quarantine_by_reason.items() if v}
        assert set(counted) <= set(REASONS)
        seen["rejected_files"] += len(result.rejected)
        for reason, n in counted.items():
            seen[reason] = seen.get(reason, 0) + n
    print(f"seed {seed}: {seen}")
    assert seen["malformed"] > 0 and seen["invalid_encoding"] + seen["rejected_files"] > 0  # it reached curate


def check_bronze(spark, conf, source: str, result) -> None:
    bronze = tables.read(spark, conf.table_uri(f"bronze.{source}"))
    header = "_header" in bronze.columns
    got: dict[str, list[bytes]] = {}
    for r in bronze.orderBy("_file", "_line").collect():
        line = bytes(r["_raw"]) if r["_raw"] is not None else r["value"].encode("utf-8")
        got.setdefault(r["_file"].rsplit("/", 1)[-1], []).append(line)
    rejected = {p.rsplit("/", 1)[-1] for p in result.rejected}
    ledger = {r["path"].rsplit("/", 1)[-1]: r for r in tables.read(spark, ledger_uri(conf))
              .where(F.col("source") == source).collect()}
    for path in sorted((Path(conf.path("landing")) / source / f"dt={DATE}").glob("part-*")):
        rows = got.get(path.name, [])
        assert ledger[path.name]["rows"] == len(rows), path.name
        if path.name in rejected:
            assert ledger[path.name]["status"] == "rejected"
            continue
        expected = physical_lines(path)
        assert rows == (expected[1:] if header else expected), path.name
    if rejected:
        table = tables.read(spark, conf.table_uri(rejected_table(source))).collect()
        assert {r["path"].rsplit("/", 1)[-1]: r["rows_ingested"] for r in table} == {
            name: len(got.get(name, [])) for name in rejected}
