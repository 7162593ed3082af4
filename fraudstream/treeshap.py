"""XGBoost's exact SHAP values (``pred_contribs``) from per-leaf tables, for the reasons of
flagged transactions.

XGBoost's TreeSHAP took 360-1,330 µs a row on this machine for the product's model (300 trees
of depth 4), the more the smaller the batch; a flagged request to the REST API took 2 ms
longer (median) than an approved one (``benchmarks/tree_shap.py``; ``benchmarks/RESULTS.md``,
"Exact SHAP tables" and "REST API"). The values it computes (path-dependent
TreeSHAP) depend on a row only through which side of each split the row takes, so most of the
work can be done once, when the model is loaded:

* for a leaf with value ``v`` reached through the splits on the distinct features
  ``u_1 .. u_m`` of its path, the tree's expected value given the features in a set ``S`` is
  ``v * prod_j (s_j if u_j in S else r_j)``, where ``s_j`` is 1 when the row takes every split
  on ``u_j`` the path's way (missing values go the default way) and ``r_j`` is the product of
  those splits' cover ratios (child cover / parent cover), the share of training rows that
  went that way;
* the Shapley value of ``u_i`` in that game is ``v * (s_i - r_i) * sum over S of
  |S|! (m - |S| - 1)! / m! * prod_{j not in S, j != i} r_j``, ``S`` ranging over the subsets of
  the other features with ``s_j = 1``. It depends on the row only through the ``m`` bits
  ``s_j``; so each leaf gets a table of its ``2**m x m`` values, built at load;
* a row's SHAP value of a feature is the sum, over every leaf of every tree, of the table entry
  of the leaf's bits for that row (``m <= depth``: 16 rows of 4 values per leaf at depth 4).

Per row that is one comparison per split and one table read per leaf and path feature, in a
few numpy operations over all trees at once. XGBoost computes in float32 and this in float64,
so the two differ in the last bits: :meth:`LeafShap.from_booster` checks the tables against
XGBoost on probe rows (every side of every split) within :data:`TOLERANCE` and returns
``None`` (XGBoost computes them) for a model that fails the check or whose tables would be too
large (deep trees: ``2**depth`` entries per leaf), or that is not one :mod:`fraudstream.trees`
reads (objective, categorical splits, vector leaves).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np
import xgboost as xgb

from fraudstream.trees import _unsupported, learner_of, probe_rows

log = logging.getLogger(__name__)

#: Deepest trees read (a leaf's path features are bits of one byte).
MAX_DEPTH = 8
#: Largest table built, in bytes (depth 4: 2 MB for 300 trees; depth 8 would need ~1 GB).
MAX_TABLE_BYTES = 64 * 1024 * 1024
#: Agreement required with XGBoost, per value: ``|ours - xgboost| <= TOLERANCE * (1 + |xgboost|)``
#: (XGBoost sums in float32: about 1e-7 relative per tree).
TOLERANCE = 2e-5
#: Probe rows checked at load (evenly spaced among :func:`~fraudstream.trees.probe_rows`;
#: XGBoost's TreeSHAP on all of them, ~1,300 rows, took about 1 s).
PROBE_ROWS = 320
#: Rows per call in the probe check.
PROBE_CHUNK_ROWS = 256


@dataclass(frozen=True)
class LeafShap:
    """Per-leaf SHAP tables of a tree ensemble (all trees' leaves together).

    The split nodes of all trees are numbered together; the last number is a padding split that
    every row takes to the left, for paths shorter than ``depth``.
    """

    split_feature: np.ndarray  # intp (splits + 1,): the last one is the padding split
    split_threshold: np.ndarray  # float32 (splits + 1,)
    split_default_left: np.ndarray  # bool (splits + 1,): where a missing value goes
    path_split: np.ndarray  # intp (depth, leaves): the split at each step of a leaf's path
    path_left: np.ndarray  # bool (depth, leaves): whether the path goes left there
    path_bit: np.ndarray  # uint8 (depth, leaves): the bit of that split's feature in the leaf
    all_bits: np.ndarray  # uint8 (leaves,): every path feature's bit set
    table: np.ndarray  # float64 (leaves * 2**depth, depth): values per leaf, bits, feature slot
    table_row: np.ndarray  # intp (leaves,): each leaf's first row in ``table``
    slot_feature: np.ndarray  # intp (leaves * depth,): each slot's feature (padding: n_features)
    n_features: int

    @classmethod
    def from_booster(cls, booster: xgb.Booster, learner: dict | None = None) -> LeafShap | None:
        """The tables of ``booster``, or ``None`` when XGBoost should compute the values.
        ``learner``: :func:`~fraudstream.trees.learner_of` ``booster``, if parsed already."""
        learner = learner_of(booster) if learner is None else learner
        reason = _unsupported(learner)
        if reason is None:
            reason = _too_large(learner)
        if reason is not None:
            log.info("SHAP tables off (%s): XGBoost computes exact reasons", reason)
            return None
        tables = cls._build(learner)
        mismatch = tables._mismatch(booster)
        if mismatch is not None:
            log.warning("SHAP tables off: %s; XGBoost computes exact reasons", mismatch)
            return None
        return tables

    @classmethod
    def _build(cls, learner: dict) -> LeafShap:
        trees = learner["gradient_booster"]["model"]["trees"]
        n_features = int(learner["learner_model_param"]["num_feature"])
        feature: list[int] = []
        threshold: list[float] = []
        default_left: list[bool] = []
        leaves: list[tuple[float, list[tuple[int, bool, int, float]]]] = []
        for tree in trees:
            left, right = tree["left_children"], tree["right_children"]
            cond, cover = tree["split_conditions"], tree["sum_hessian"]
            split_on, goes_default = tree["split_indices"], tree["default_left"]
            number: dict[int, int] = {}  # a split node's number among all trees' splits
            for node, child in enumerate(left):
                if child != -1:
                    number[node] = len(feature)
                    feature.append(int(split_on[node]))
                    threshold.append(float(cond[node]))
                    default_left.append(bool(goes_default[node]))
            stack: list[tuple[int, list[tuple[int, bool, int, float]]]] = [(0, [])]
            while stack:  # every leaf with its path: (split, goes left, feature, cover ratio)
                node, path = stack.pop()
                if left[node] == -1:
                    leaves.append((float(cond[node]), path))
                    continue
                for child, goes_left in ((left[node], True), (right[node], False)):
                    ratio = cover[child] / cover[node]
                    stack.append((child, [*path, (number[node], goes_left, split_on[node], ratio)]))
        pad = len(feature)
        feature.append(0)
        threshold.append(math.inf)  # every value (and a missing one) goes left
        default_left.append(True)
        depth = max(1, max(len(path) for _, path in leaves))
        n = len(leaves)
        path_split = np.full((depth, n), pad, dtype=np.intp)
        path_left = np.ones((depth, n), dtype=bool)
        path_bit = np.zeros((depth, n), dtype=np.uint8)
        all_bits = np.zeros(n, dtype=np.uint8)
        slot_feature = np.full((n, depth), n_features, dtype=np.intp)
        value = np.zeros(n)
        ratios = np.ones((n, depth))  # padding slots: ratio 1 (they never count)
        width = np.zeros(n, dtype=np.intp)
        for i, (leaf_value, path) in enumerate(leaves):
            slots = list(dict.fromkeys(f for _, _, f, _ in path))
            for step, (split, goes_left, f, ratio) in enumerate(path):
                k = slots.index(f)
                path_split[step, i], path_left[step, i] = split, goes_left
                path_bit[step, i] = 1 << k
                ratios[i, k] *= ratio  # a feature split more than once: one player
            slot_feature[i, : len(slots)] = slots
            all_bits[i] = (1 << len(slots)) - 1
            value[i], width[i] = leaf_value, len(slots)
        table = np.zeros((n, 1 << depth, depth))
        for m in np.unique(width).tolist():
            rows = np.flatnonzero(width == m)
            table[rows, : 1 << m, :m] = _shapley_table(value[rows], ratios[rows, :m])
        return cls(
            split_feature=np.asarray(feature, dtype=np.intp),
            split_threshold=np.asarray(threshold, dtype=np.float64).astype(np.float32),
            split_default_left=np.asarray(default_left, dtype=bool),
            path_split=path_split,
            path_left=path_left,
            path_bit=path_bit,
            all_bits=all_bits,
            table=table.reshape(n << depth, depth),
            table_row=np.arange(n, dtype=np.intp) << depth,
            slot_feature=slot_feature.ravel(),
            n_features=n_features,
        )

    def values(self, matrix: np.ndarray) -> np.ndarray:
        """SHAP values (float32 as XGBoost's, one column per feature, no bias) of ``matrix``
        (float32, missing as NaN): XGBoost's ``pred_contribs`` within :data:`TOLERANCE`."""
        n = len(matrix)
        x = np.take(matrix, self.split_feature, axis=1)  # (rows, splits)
        left = np.where(np.isnan(x), self.split_default_left, x < self.split_threshold)
        off_path = np.zeros((n, self.all_bits.size), dtype=np.uint8)
        for step in range(len(self.path_split)):  # a feature is off when any of its splits is
            wrong = np.take(left, self.path_split[step], axis=1) != self.path_left[step]
            off_path |= wrong.view(np.uint8) * self.path_bit[step]
        bits = self.all_bits & ~off_path
        per_slot = np.take(self.table, self.table_row + bits, axis=0)  # (rows, leaves, depth)
        width = self.n_features + 1  # the padding slots land in a last column, dropped
        if n == 1:
            out = np.bincount(self.slot_feature, per_slot.ravel(), minlength=width)[None]
        else:
            cell = (np.arange(n)[:, None] * width + self.slot_feature).ravel()
            out = np.bincount(cell, per_slot.ravel(), minlength=n * width).reshape(n, width)
        return out[:, : self.n_features].astype(np.float32)

    def _mismatch(self, booster: xgb.Booster) -> str | None:
        """How the tables differ from XGBoost on probe rows (``None``: within tolerance)."""
        probe = probe_rows(self.split_feature[:-1], self.split_threshold[:-1], self.n_features)
        if len(probe) > PROBE_ROWS:  # evenly spaced; the last row (every value missing) too
            probe = probe[np.linspace(0, len(probe) - 1, PROBE_ROWS).astype(np.intp)]
        expected = booster.predict(
            xgb.DMatrix(probe, nthread=1), pred_contribs=True, validate_features=False
        )[:, : self.n_features]
        for start in range(0, len(probe), PROBE_CHUNK_ROWS):
            chunk = slice(start, start + PROBE_CHUNK_ROWS)
            got = self.values(probe[chunk])
            if not agrees(got, expected[chunk]).all():
                error = np.abs(got - expected[chunk]).max()
                return f"SHAP values differ from XGBoost's by up to {error:.3g}"
        return None


def agrees(ours: np.ndarray, xgboost: np.ndarray) -> np.ndarray:
    """Per value, whether ``ours`` is XGBoost's within :data:`TOLERANCE`."""
    return np.abs(ours - xgboost) <= TOLERANCE * (1 + np.abs(xgboost))


def _too_large(learner: dict) -> str | None:
    leaves, depth = 0, 0
    for tree in learner["gradient_booster"]["model"]["trees"]:
        left = tree["left_children"]
        leaves += sum(1 for child in left if child == -1)
        depth = max(depth, _depth(left, tree["right_children"]))
    if depth > MAX_DEPTH:
        return f"depth {depth} (at most {MAX_DEPTH})"
    size = leaves * (1 << depth) * depth * 8
    if size > MAX_TABLE_BYTES:
        return f"tables of {size / 2**20:.0f} MB for depth {depth}"
    return None


def _depth(left: list[int], right: list[int]) -> int:
    depth, level = 0, [0]
    while True:
        level = [c for node in level if left[node] != -1 for c in (left[node], right[node])]
        if not level:
            return depth
        depth += 1


def _shapley_table(value: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """``(leaves, 2**m, m)``: each leaf's SHAP value of each of its ``m`` path features, for
    each set of bits (bit ``j``: the row takes feature ``j``'s splits the path's way)."""
    n, m = ratio.shape
    weight = [math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) for s in range(m)]
    out = np.zeros((n, 1 << m, m))
    for bits in range(1 << m):
        on = [j for j in range(m) if bits >> j & 1]
        for i in range(m):
            others = [j for j in on if j != i]
            total = np.zeros(n)
            for size in range(len(others) + 1):
                for chosen in itertools.combinations(others, size):
                    outside = [j for j in range(m) if j != i and j not in chosen]
                    total += weight[size] * np.prod(ratio[:, outside], axis=1)
            out[:, bits, i] = value * ((bits >> i & 1) - ratio[:, i]) * total
    return out
