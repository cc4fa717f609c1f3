"""Benchmark: the compiled tree evaluator (:mod:`lakeloop.trees`) against xgboost's ``inplace_predict``.

    .venv/bin/python bench/trees.py [--repeat 5] [--rows 1,4,50,1000]

For each ensemble (synthetic data, 10 % missing values, trained by xgboost with one thread), at each number of
rows per call: the node-by-node walk alone, the evaluator as it runs (the complete-tree kernel from
``_FULL_MIN_ROWS`` rows on, the walk below) and ``inplace_predict``, in µs per row, the median of ``--repeat``
timed passes after a warm-up call.  Every output of the evaluator is checked equal to xgboost's first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lib")]

#: (features, trees, depth) of the ensembles measured
ENSEMBLES = ((16, 100, 6), (20, 300, 8))


def ensemble(features: int, trees: int, depth: int, seed: int = 1) -> tuple:
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20_000, features)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    signal = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2])
    y = (signal + 0.3 * rng.normal(size=len(x)) > 0).astype(np.float32)
    params = {"max_depth": depth, "eta": 0.1, "nthread": 1, "objective": "binary:logistic"}
    return xgb.train(params, xgb.DMatrix(x, label=y), trees), rng.normal(size=(1000, features)).astype(np.float32)


def per_row_us(fn, matrix: np.ndarray, repeat: int) -> float:
    calls = max(20_000 // len(matrix), 20)
    fn(matrix)
    passes = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn(matrix)
        passes.append((time.perf_counter() - start) / calls / len(matrix) * 1e6)
    return statistics.median(passes)


def main(argv: list[str] | None = None) -> int:
    from lakeloop.trees import compiled_trees

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rows", default="1,4,50,1000", help="rows per call, comma-separated (at most 1,000)")
    args = p.parse_args(argv)
    sizes = [int(n) for n in args.rows.split(",")]
    print(f"{'ensemble':32} {'rows':>6} {'walk':>8} {'evaluator':>10} {'xgboost':>9}  (us per row)")
    for features, trees, depth in ENSEMBLES:
        booster, rows = ensemble(features, trees, depth)
        evaluator = compiled_trees(booster)
        if evaluator is None:
            raise SystemExit(f"the ensemble of {trees} trees was not compiled (the log says why)")
        complete = evaluator.full

        def walk(matrix, evaluator=evaluator, complete=complete):  # noqa: ANN001, ANN202
            evaluator.full = None
            try:
                return evaluator(matrix)
            finally:
                evaluator.full = complete

        def xgboost(matrix, booster=booster):  # noqa: ANN001, ANN202
            return booster.inplace_predict(matrix, validate_features=False)

        for n in sizes:
            matrix = np.ascontiguousarray(rows[:n])
            if not (np.array_equal(evaluator(matrix), xgboost(matrix)) and np.array_equal(walk(matrix),
                                                                                          xgboost(matrix))):
                raise SystemExit(f"outputs differ from xgboost at {n} rows")
            figures = [per_row_us(fn, matrix, args.repeat) for fn in (walk, evaluator, xgboost)]
            label = f"{trees} trees, depth {depth}, {features} features"
            print(f"{label:32} {n:6d} {figures[0]:8.2f} {figures[1]:10.2f} {figures[2]:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
