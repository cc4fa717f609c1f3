"""Landing files of the examples: a pandas frame written as ``<landing>/<source>/dt=YYYY-MM-DD/<source>.<ext>``, one
file per landing date, the way an upstream export drops them (``docs/sources.md``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

__all__ = ["write_batches", "parser", "run"]


def write_batches(frame: pd.DataFrame, landing: str | Path, source: str, dates: pd.Series, fmt: str = "csv") -> dict:
    """Write the rows of ``frame`` to the landing folder of ``source``, each under its landing date of ``dates``
    (``YYYY-MM-DD`` strings, aligned with ``frame``); ``fmt`` is ``csv`` (with a header) or ``jsonl``.  Returns
    rows per landing date."""
    counts = {}
    for day, rows in frame.groupby(dates.to_numpy(), sort=True):
        folder = Path(landing) / source / f"dt={day}"
        folder.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            rows.to_csv(folder / f"{source}.csv", index=False)
        else:
            rows.to_json(folder / f"{source}.jsonl", orient="records", lines=True, date_format="iso")
        counts[str(day)] = len(rows)
    return counts


def parser(description: str) -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(description=description)
    out.add_argument("--landing", required=True, help="the landing root (conf key landing)")
    return out


def run(description: str, load, argv: Sequence[str] | None = None) -> int:
    """The command line of a loader: ``load(landing) -> {date: rows}``, printed."""
    args = parser(description).parse_args(argv)
    for day, rows in load(args.landing).items():
        print(f"dt={day}: {rows} rows")
    return 0
