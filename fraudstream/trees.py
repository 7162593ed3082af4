"""XGBoost's prediction and approximate contributions for a few rows, without a ``DMatrix``.

For one transaction, XGBoost's fixed costs dominate: building the ``DMatrix`` and two
``predict`` calls (score, then ``approx_contribs``) were 30 % of the REST API's CPU under
load (py-spy); the walk does both for one row in 144 µs against XGBoost's 508 µs
(``benchmarks/tree_walk.py``). :class:`TreeWalk` walks all the trees of
the ensemble at once with numpy, one level per step, and gets both from the same walk.

It reproduces XGBoost's float32 arithmetic in XGBoost's order, so its results are XGBoost's
bit for bit:

* margin: the base margin, then each tree's leaf added in tree order (float32);
  probability: ``1 / (1 + exp(-margin))`` in float32, as XGBoost's ``Sigmoid``;
* approximate contributions (``approx_contribs``): each node's mean value is the
  cover-weighted mean of its children (float32, computed as XGBoost fills them); each split
  credits its feature with the change of mean value along the row's path; per-tree vectors
  are added in tree order; the bias column is the trees' root means plus the base margin.

:meth:`TreeWalk.from_booster` builds one only for what it reproduces (``gbtree``,
``binary:logistic``, one target, numerical splits) and only if it matches XGBoost bit for
bit on probe rows built from the model's own split values (below, at and above each
threshold, and missing); otherwise it returns ``None`` and the caller uses XGBoost.

The walk's cost grows with rows x trees x features (a dense contribution tensor), so it
pays only for small batches: :data:`WALK_MAX_ROWS`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import xgboost as xgb

log = logging.getLogger(__name__)

#: Batches of at most this many rows are walked; larger ones go to XGBoost, as fast at 16
#: rows and faster beyond (``benchmarks/tree_walk.py``; ``benchmarks/RESULTS.md``, "Tree walk").
WALK_MAX_ROWS = 8
#: Probe rows per check at load: random combinations of split values, and (at most) rows
#: that put one feature below, at or above one of its thresholds.
PROBE_RANDOM_ROWS = 256
PROBE_EDGE_ROWS = 1024
#: Rows per walk in the check (the walk treats every row alike, whatever the batch size).
PROBE_CHUNK_ROWS = 64
_F32 = np.float32


@dataclass(frozen=True)
class TreeWalk:
    """The trees as flat node arrays (all trees concatenated; ``roots`` index each tree's root).

    Leaves point to themselves and split on a padding column (``n_features``, always 0), so
    every row can take ``depth`` steps whatever its path's length.
    """

    roots: np.ndarray  # int64 (trees,)
    left: np.ndarray  # int64 (nodes,): child when going left (a leaf: itself)
    right: np.ndarray  # int64 (nodes,)
    feature: np.ndarray  # int64 (nodes,): split column (a leaf: n_features)
    threshold: np.ndarray  # float32 (nodes,)
    default_left: np.ndarray  # bool (nodes,): where a missing value goes
    leaf_value: np.ndarray  # float32 (nodes,): 0 on split nodes
    mean: np.ndarray  # float32 (nodes,): XGBoost's node mean values
    depth: int
    base_margin: np.float32
    n_features: int
    _layouts: dict[int, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def from_booster(cls, booster: xgb.Booster, learner: dict | None = None) -> TreeWalk | None:
        """The walk of ``booster``, or ``None`` when it is not one this module reproduces
        exactly (then use XGBoost). Checks itself against XGBoost on probe rows.
        ``learner``: :func:`learner_of` ``booster``, when the caller parsed it already."""
        learner = learner_of(booster) if learner is None else learner
        reason = _unsupported(learner)
        if reason is not None:
            log.info("tree walk off (%s): XGBoost scores every batch", reason)
            return None
        walk = cls._build(learner)
        mismatch = walk._mismatch(booster)
        if mismatch is not None:
            log.warning("tree walk off: %s on probe rows; XGBoost scores every batch", mismatch)
            return None
        return walk

    @classmethod
    def _build(cls, learner: dict) -> TreeWalk:
        trees = learner["gradient_booster"]["model"]["trees"]
        n_features = int(learner["learner_model_param"]["num_feature"])
        fields = ("left", "right", "feature", "threshold", "default_left", "leaf_value", "mean")
        parts: dict[str, list[np.ndarray]] = {k: [] for k in fields}
        roots, depth, offset = [], 0, 0
        for tree in trees:
            left = np.asarray(tree["left_children"], dtype=np.int64)
            right = np.asarray(tree["right_children"], dtype=np.int64)
            leaf = left == -1
            nodes = np.arange(len(left))
            # JSON floats are float32's shortest round-trip strings: exact once cast back
            cond = np.asarray(tree["split_conditions"], dtype=np.float64).astype(_F32)
            hess = np.asarray(tree["sum_hessian"], dtype=np.float64).astype(_F32)
            parts["left"].append(np.where(leaf, nodes, left) + offset)
            parts["right"].append(np.where(leaf, nodes, right) + offset)
            parts["feature"].append(
                np.where(leaf, n_features, np.asarray(tree["split_indices"], dtype=np.int64))
            )
            parts["threshold"].append(np.where(leaf, _F32(0), cond))
            parts["default_left"].append(np.asarray(tree["default_left"], dtype=bool))
            parts["leaf_value"].append(np.where(leaf, cond, _F32(0)))
            mean, tree_depth = _means_and_depth(left, right, cond, hess)
            parts["mean"].append(mean)
            roots.append(offset)
            depth = max(depth, tree_depth)
            offset += len(left)
        flat = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(
            roots=np.asarray(roots, dtype=np.int64),
            left=flat["left"],
            right=flat["right"],
            feature=flat["feature"],
            threshold=flat["threshold"],
            default_left=flat["default_left"],
            leaf_value=flat["leaf_value"],
            mean=flat["mean"],
            depth=depth,
            base_margin=_base_margin(learner),
            n_features=n_features,
        )

    def run(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (float32, one per row) and approximate contributions (float32, one
        column per feature plus the bias last) of ``matrix`` (float32, missing as NaN)."""
        n = len(matrix)
        trees = len(self.roots)
        width = self.n_features + 1
        padded = np.zeros((n, width), dtype=_F32)  # a padding column (0) for the leaves' steps
        padded[:, : self.n_features] = matrix
        x = padded.ravel()
        row_start, cell_start = self._layout(n)
        node = np.repeat(self.roots, n)  # one cell per (tree, row), tree-major
        # XGBoost's per-tree contribution vectors, laid out (row, feature, tree) so that the
        # sum over trees, in tree order, is a cumsum along the contiguous axis
        per_tree = np.zeros(n * width * trees, dtype=_F32)
        per_tree[cell_start + self.n_features * trees] = self.mean[node]  # bias: root means
        for _ in range(self.depth):
            feature = self.feature[node]
            value = x[row_start + feature]
            go_left = np.where(
                np.isnan(value), self.default_left[node], value < self.threshold[node]
            )
            child = np.where(go_left, self.left[node], self.right[node])
            # one cell per (tree, row) per step, so no index repeats; a leaf's step adds 0
            # (to the bias column)
            per_tree[cell_start + feature * trees] += self.mean[child] - self.mean[node]
            node = child
        contributions = np.cumsum(per_tree.reshape(n, width, trees), axis=2, dtype=_F32)[..., -1]
        contributions[:, self.n_features] += self.base_margin  # the bias column, last
        leaves = np.empty((n, trees + 1), dtype=_F32)
        leaves[:, 0] = self.base_margin
        leaves[:, 1:] = self.leaf_value[node].reshape(trees, n).T
        margin = np.cumsum(leaves, axis=1, dtype=_F32)[:, -1]  # base first, then tree order
        return _sigmoid(margin), contributions

    def _layout(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """For the cells (tree-major) of ``n`` rows: where each cell's row starts in the
        padded input, and where its vector starts in ``run``'s ``per_tree``."""
        layout = self._layouts.get(n)
        if layout is None:
            trees, width = len(self.roots), self.n_features + 1
            cell = np.arange(trees * n)
            row, tree = cell % n, cell // n
            layout = (row * width, row * width * trees + tree)
            if len(self._layouts) < 64:
                self._layouts[n] = layout
        return layout

    def _mismatch(self, booster: xgb.Booster) -> str | None:
        """What differs from XGBoost on the probe rows (``None``: bit for bit equal)."""
        probe = _probe_rows(self)
        dmatrix = xgb.DMatrix(probe, nthread=1)
        expected = booster.predict(dmatrix, validate_features=False)
        expected_contrib = booster.predict(
            dmatrix, pred_contribs=True, approx_contribs=True, validate_features=False
        )
        for start in range(0, len(probe), PROBE_CHUNK_ROWS):
            chunk = slice(start, start + PROBE_CHUNK_ROWS)
            got, contrib = self.run(probe[chunk])
            if not np.array_equal(got, expected[chunk]):
                return "predictions differ"
            if not np.array_equal(contrib, expected_contrib[chunk]):
                return "approximate contributions differ"
        return None


def learner_of(booster: xgb.Booster) -> dict:
    """The ``learner`` part of ``booster``'s JSON model (trees, objective, parameters)."""
    return dict(json.loads(booster.save_raw("json"))["learner"])


def _unsupported(learner: dict) -> str | None:
    objective = learner["objective"]["name"]
    booster = learner["gradient_booster"]
    params = learner["learner_model_param"]
    if objective != "binary:logistic":
        return f"objective {objective}"
    if booster.get("name") != "gbtree":
        return f"booster {booster.get('name')}"
    if params.get("num_class", "0") not in ("0", "1") or params.get("num_target", "1") != "1":
        return "more than one output"
    model = booster["model"]
    if model["gbtree_model_param"].get("num_parallel_tree", "1") != "1":
        return "parallel trees"
    for tree in model["trees"]:
        if any(tree.get("split_type", [])) or tree.get("categories_nodes"):
            return "categorical splits"
        if tree["tree_param"].get("size_leaf_vector", "1") not in ("0", "1"):
            return "vector leaves"
    return None


def _means_and_depth(
    left: np.ndarray, right: np.ndarray, cond: np.ndarray, hess: np.ndarray
) -> tuple[np.ndarray, int]:
    """XGBoost's ``FillNodeMeanValues`` (float32, children before parents) and the depth."""
    n = len(left)
    depth = np.zeros(n, dtype=np.int64)
    order = [0]
    for node in order:  # breadth first: parents before children
        if left[node] != -1:
            depth[left[node]] = depth[right[node]] = depth[node] + 1
            order += [int(left[node]), int(right[node])]
    mean = np.zeros(n, dtype=_F32)
    for node in reversed(order):
        a, b = left[node], right[node]
        if a == -1:
            mean[node] = cond[node]
        else:
            total = mean[a] * hess[a]
            total = _F32(total + mean[b] * hess[b])
            mean[node] = _F32(total / hess[node])
    return mean, int(depth.max())


def _base_margin(learner: dict) -> np.float32:
    """The base score as a margin: XGBoost's ``ProbToMargin`` for the logistic objective."""
    base = _F32(float(learner["learner_model_param"]["base_score"].strip("[]")))
    odds = _F32(_F32(1.0) / base) - _F32(1.0)
    return _F32(-np.log(np.float64(odds)))


def _c_expf() -> Callable[[float], float] | None:
    """The C library's ``expf``, which XGBoost's ``Sigmoid`` calls (numpy's float32 ``exp``
    and a rounded float64 ``exp`` differ from it in the last bit now and then)."""
    name = ctypes.util.find_library("m") or ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        expf = ctypes.CDLL(name).expf
    except (OSError, AttributeError):
        return None
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    return expf


_EXPF = _c_expf()


def _sigmoid(margin: np.ndarray) -> np.ndarray:
    """XGBoost's ``Sigmoid`` in float32: ``1 / (expf(min(-x, 88.7)) + 1)``."""
    negated = np.minimum(-margin, _F32(88.7))
    if _EXPF is None:  # the probe check decides whether this is still exact
        e = np.exp(negated.astype(np.float64)).astype(_F32)
    else:
        e = np.array([_EXPF(v) for v in negated.tolist()], dtype=_F32)
    return _F32(1.0) / (e + _F32(1.0))


def _probe_rows(walk: TreeWalk) -> np.ndarray:
    """:func:`probe_rows` of the walk's splits."""
    split = walk.feature < walk.n_features
    return probe_rows(walk.feature[split], walk.threshold[split], walk.n_features)


def probe_rows(feature: np.ndarray, threshold: np.ndarray, n_features: int) -> np.ndarray:
    """Rows (float32) that reach every side of every split (``feature``, ``threshold``: one
    per split): each feature below, at and above each of its thresholds (others missing or at
    a random threshold), and random combinations."""
    rng = np.random.default_rng(0)
    per_feature = [np.unique(threshold[feature == f]) for f in range(n_features)]
    pools = [
        np.concatenate((t, np.nextafter(t, _F32(-np.inf)), np.nextafter(t, _F32(np.inf))))
        if len(t)
        else np.zeros(1, dtype=_F32)
        for t in per_feature
    ]
    random_rows = np.stack([rng.choice(pool, PROBE_RANDOM_ROWS) for pool in pools], axis=1).astype(
        _F32
    )
    random_rows[rng.random(random_rows.shape) < 0.1] = np.nan
    edges = [(f, v) for f, pool in enumerate(pools) for v in pool.tolist()]
    if len(edges) > PROBE_EDGE_ROWS:
        edges = [edges[i] for i in rng.choice(len(edges), PROBE_EDGE_ROWS, replace=False)]
    edge_rows = random_rows[rng.integers(0, PROBE_RANDOM_ROWS, len(edges))].copy()
    for i, (f, v) in enumerate(edges):
        edge_rows[i, f] = v
    missing = np.full((1, n_features), np.nan, _F32)
    return np.concatenate([random_rows, edge_rows, missing])
