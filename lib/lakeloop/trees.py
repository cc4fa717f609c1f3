"""A compiled evaluator of an xgboost tree ensemble, for scoring a few rows at a time.

``Booster.inplace_predict`` costs about 0.15 ms for one row, almost all of it per call (a JSON
configuration built and parsed, ctypes marshalling); the trees themselves take a few microseconds.
:func:`compiled_trees` flattens a booster's trees (from its JSON model) into arrays walked by a numba
function, and keeps it only when it reproduces ``inplace_predict`` bit for bit on a check matrix built from
the model's own split values (each threshold, its float32 neighbours and missing values); anything it does not
handle (categorical splits, several outputs, dart or linear boosters, other objectives) keeps xgboost.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

__all__ = ["CompiledTrees", "compiled_trees"]

log = logging.getLogger(__name__)

#: objectives whose output is one value per row: the transform applied to the margin
_TRANSFORMS = {"binary:logistic": "sigmoid", "reg:logistic": "sigmoid", "reg:squarederror": "identity",
               "reg:absoluteerror": "identity", "reg:pseudohubererror": "identity", "binary:logitraw": "identity"}
_CHECK_ROWS = 4096
#: the most positions (trees x 2 ** depth) of the complete-tree layout; deeper ensembles are walked node by node
_FULL_POSITIONS = 1 << 22
#: from this many rows the complete-tree kernel is faster; below, a walk that stops at each leaf
_FULL_MIN_ROWS = 4


def _kernel() -> Any:
    """The numba function (compiled on first use, once per process)."""
    import numba

    @numba.njit(nogil=True, cache=False)
    def predict(x, roots, left, right, feature, value, default_left, base, sigmoid, out):  # noqa: ANN001
        one, cap = np.float32(1.0), np.float32(88.7)
        out[:] = base
        # tree by tree over all the rows: one tree's nodes stay in cache while every row walks it; each row's
        # margin still adds the trees in their order, so the sums are the same float32 sums
        for t in range(roots.shape[0]):
            root = roots[t]
            for i in range(x.shape[0]):
                node = root
                while left[node] != -1:
                    f = x[i, feature[node]]
                    if np.isnan(f):
                        node = left[node] if default_left[node] else right[node]
                    elif f < value[node]:
                        node = left[node]
                    else:
                        node = right[node]
                out[i] += value[node]
        if sigmoid:  # xgboost's Sigmoid: 1 / (exp(min(-x, 88.7)) + 1) in float32
            for i in range(x.shape[0]):
                out[i] = one / (np.exp(min(-out[i], cap)) + one)
        return out

    return predict


def _full_kernel() -> Any:
    """The numba function over complete trees (compiled on first use, once per process): every tree padded to
    the ensemble's depth, a leaf above it repeated under a node whose two sides hold the same value, so every row
    takes the same number of steps and each step is arithmetic, not a branch the processor must guess."""
    import numba

    @numba.njit(nogil=True, cache=False)
    def predict(x, depth, feature, threshold, default_right, leaves, base, sigmoid, out):  # noqa: ANN001
        one, cap = np.float32(1.0), np.float32(88.7)
        inner = feature.shape[1]
        out[:] = base
        nodes = np.empty(x.shape[0], dtype=np.int32)
        for t in range(feature.shape[0]):
            f_t, v_t, d_t, leaf_t = feature[t], threshold[t], default_right[t], leaves[t]
            nodes[:] = 0
            # level by level over all the rows: each level's steps are independent of one another
            for _ in range(depth):
                for i in range(x.shape[0]):
                    node = nodes[i]
                    f = x[i, f_t[node]]
                    # right: not below the threshold, or missing where missing goes right (NaN >= v is false)
                    nodes[i] = 2 * node + 1 + (np.int32(f >= v_t[node]) | (np.int32(f != f) & d_t[node]))
            for i in range(x.shape[0]):
                out[i] += leaf_t[nodes[i] - inner]
        if sigmoid:
            for i in range(x.shape[0]):
                out[i] = one / (np.exp(min(-out[i], cap)) + one)
        return out

    return predict


_PREDICT: Any = None
_PREDICT_FULL: Any = None


class CompiledTrees:
    """The trees of one booster as flat arrays (node ids global over all trees); call it with a C-ordered
    float32 matrix, get float32 outputs like ``inplace_predict``."""

    def __init__(self, trees: list[dict[str, Any]], base_margin: np.float32, transform: str, n_features: int) -> None:
        sizes = [len(t["left_children"]) for t in trees]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)

        def flat(name: str, dtype: Any) -> np.ndarray:
            return np.concatenate([np.asarray(t[name], dtype=np.float64) for t in trees]).astype(dtype)

        def children(name: str) -> np.ndarray:  # node ids made global; -1 (a leaf) kept
            return np.concatenate([np.where(np.asarray(t[name]) == -1, -1, np.asarray(t[name]) + o)
                                   for t, o in zip(trees, offsets, strict=True)]).astype(np.int32)

        self.roots, self.left, self.right = offsets, children("left_children"), children("right_children")
        self.feature = flat("split_indices", np.int32)
        self.value = flat("split_conditions", np.float32)  # a leaf's value is in its split condition
        self.default_left = flat("default_left", np.bool_)
        self.base, self.sigmoid, self.n_features = np.float32(base_margin), transform == "sigmoid", n_features
        self.full = self._complete()

    def _complete(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The trees as complete binary trees in heap order (children of position p at 2p+1 and 2p+2), level by
        level over all trees at once: ``(depth, feature, threshold, default right, leaves)``, one row per tree;
        None when that takes more than :data:`_FULL_POSITIONS` positions."""
        feature, threshold, right = [], [], []
        nodes = self.roots[:, None]
        while not np.all(leaf := self.left[nodes] == -1):  # a leaf above the bottom: a node whose sides are it
            if len(self.roots) << (len(feature) + 1) > _FULL_POSITIONS:
                return None
            feature.append(np.where(leaf, 0, self.feature[nodes]))
            threshold.append(np.where(leaf, np.float32(0), self.value[nodes]))
            right.append(np.where(leaf, False, ~self.default_left[nodes]))
            nodes = self._next_level(nodes)
        depth, width = len(feature), (len(self.roots), 0)

        def joined(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.ascontiguousarray(np.concatenate(parts, axis=1) if parts else np.empty(width), dtype=dtype)

        return (depth, joined(feature, np.int32), joined(threshold, np.float32), joined(right, np.int32),
                np.ascontiguousarray(self.value[nodes], dtype=np.float32))

    def _next_level(self, nodes: np.ndarray) -> np.ndarray:
        """The children of a level's nodes, left and right side by side (a leaf is its own two children)."""
        leaf = self.left[nodes] == -1
        sides = np.stack([np.where(leaf, nodes, self.left[nodes]), np.where(leaf, nodes, self.right[nodes])], axis=2)
        return sides.reshape(nodes.shape[0], -1)

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        global _PREDICT, _PREDICT_FULL
        if matrix.dtype != np.float32 or not matrix.flags.c_contiguous or matrix.shape[1] != self.n_features:
            raise ValueError(f"expected a C-ordered float32 matrix of {self.n_features} columns, got "
                             f"{matrix.dtype} {matrix.shape}")
        out = np.empty(matrix.shape[0], dtype=np.float32)
        if self.full is not None and matrix.shape[0] >= _FULL_MIN_ROWS:
            if _PREDICT_FULL is None:
                _PREDICT_FULL = _full_kernel()
            return _PREDICT_FULL(matrix, *self.full, self.base, self.sigmoid, out)
        if _PREDICT is None:
            _PREDICT = _kernel()
        return _PREDICT(matrix, self.roots, self.left, self.right, self.feature, self.value, self.default_left,
                        self.base, self.sigmoid, out)

    def check_matrix(self, rows: int = _CHECK_ROWS, seed: int = 0) -> np.ndarray:
        """Rows whose every value is a split threshold of its feature, a float32 neighbour of one, or missing:
        each comparison of every tree is taken both ways."""
        rng = np.random.default_rng(seed)
        inner = self.left != -1
        matrix = np.full((rows, self.n_features), np.nan, dtype=np.float32)
        for j in range(self.n_features):
            thresholds = self.value[inner & (self.feature == j)]
            if not len(thresholds):
                continue
            candidates = np.concatenate([thresholds, np.nextafter(thresholds, np.float32(-np.inf)),
                                         np.nextafter(thresholds, np.float32(np.inf)), [np.nan]]).astype(np.float32)
            matrix[:, j] = rng.choice(candidates, rows)
        return matrix


def _logf(x: np.float32) -> np.float32:
    """The C library's single-precision ``logf``, as xgboost takes the logit of its intercept: numpy's float32
    ``log`` is another implementation and is one unit in the last place off for some intercepts, which moves some
    rows' sums."""
    import ctypes
    import ctypes.util

    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.logf.restype, libm.logf.argtypes = ctypes.c_float, [ctypes.c_float]
    return np.float32(libm.logf(float(x)))


def _parse(booster: Any) -> tuple[list[dict[str, Any]], np.float32, str] | None:
    """The trees, base margin and output transform of ``booster``'s JSON model; None when not supported."""
    learner = json.loads(booster.save_raw("json"))["learner"]
    params, objective = learner["learner_model_param"], learner["objective"]["name"]
    gbm = learner["gradient_booster"]
    if gbm.get("name") != "gbtree" or objective not in _TRANSFORMS:
        return None
    if int(params.get("num_class", "0")) > 1 or int(params.get("num_target", "1")) != 1:
        return None
    trees = gbm["model"]["trees"]
    if not trees or any(any(t.get("split_type", ())) or int(t["tree_param"].get("size_leaf_vector", "1")) > 1
                        for t in trees):
        return None
    base_score = np.float32(float(params["base_score"].strip("[]").split(",")[0]))
    transform = _TRANSFORMS[objective]
    if transform == "sigmoid":  # xgboost keeps the intercept as a probability: its margin is the logit
        base_margin = -_logf(np.float32(1.0) / base_score - np.float32(1.0))
    else:
        base_margin = base_score
    return trees, np.float32(base_margin), transform


def compiled_trees(booster: Any) -> CompiledTrees | None:
    """A :class:`CompiledTrees` of ``booster`` that gives exactly what ``inplace_predict`` gives, or None (the
    reason is logged) when the model is not one it handles or a check row differs."""
    try:
        parsed = _parse(booster)
    except (KeyError, ValueError, TypeError) as exc:
        log.info("tree ensemble not compiled: its JSON model has no %s", exc)
        return None
    if parsed is None:
        log.info("tree ensemble not compiled: a booster, objective or split kind it does not handle")
        return None
    trees = CompiledTrees(*parsed, n_features=booster.num_features())
    check = trees.check_matrix()
    expected = np.asarray(booster.inplace_predict(check, validate_features=False), dtype=np.float32)
    got = trees(check)
    if expected.shape != got.shape or not np.array_equal(expected, got, equal_nan=True):
        differ = int(np.sum(expected != got)) if expected.shape == got.shape else len(got)
        log.warning("tree ensemble not compiled: %d of %d check rows differ from xgboost", differ, len(got))
        return None
    return trees
