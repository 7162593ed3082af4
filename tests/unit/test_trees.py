"""The tree walk gives XGBoost's predictions and approximate contributions bit for bit, for
models of several shapes, and stays off where it would not (other objectives, categorical
splits, or any difference on the probe rows)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.trees import WALK_MAX_ROWS, TreeWalk

pytestmark = pytest.mark.unit

N_FEATURES = 5


def _train(
    params: dict[str, object], rounds: int = 40, seed: int = 0, missing: float = 0.15
) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, N_FEATURES)) * rng.choice([1.0, 100.0], N_FEATURES)
    x[rng.random(x.shape) < missing] = np.nan
    score = np.nan_to_num(x[:, 0]) + 0.01 * np.nan_to_num(x[:, 1]) ** 2 - np.isnan(x[:, 2])
    y = (score + rng.normal(size=len(x)) > 1.5).astype(int)
    return xgb.train(
        {"nthread": 1, "seed": seed, **params}, xgb.DMatrix(x, label=y), num_boost_round=rounds
    )


MODELS = {
    "depth 4": {"objective": "binary:logistic", "max_depth": 4, "eta": 0.1},
    "depth 8, sampled": {
        "objective": "binary:logistic",
        "max_depth": 8,
        "subsample": 0.7,
        "colsample_bytree": 0.6,
    },
    "stumps, base score": {"objective": "binary:logistic", "max_depth": 1, "base_score": 0.03},
    "weighted, hist": {
        "objective": "binary:logistic",
        "max_depth": 5,
        "scale_pos_weight": 20,
        "tree_method": "hist",
        "min_child_weight": 5,
    },
}


@pytest.fixture(scope="module", params=list(MODELS))
def booster(request: pytest.FixtureRequest) -> xgb.Booster:
    return _train(MODELS[request.param])


@pytest.fixture(scope="module")
def deep() -> tuple[xgb.Booster, TreeWalk]:
    booster = _train(MODELS["depth 8, sampled"])
    walk = TreeWalk.from_booster(booster)
    assert walk is not None
    return booster, walk


def _xgboost(booster: xgb.Booster, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dmatrix = xgb.DMatrix(x, nthread=1)
    return booster.predict(dmatrix), booster.predict(
        dmatrix, pred_contribs=True, approx_contribs=True
    )


def test_the_walk_is_xgboost_bit_for_bit(booster: xgb.Booster) -> None:
    walk = TreeWalk.from_booster(booster)
    assert walk is not None
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(400, N_FEATURES)) * 50).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    expected, expected_contrib = _xgboost(booster, x)
    for rows in (1, 3, WALK_MAX_ROWS):
        for start in range(0, len(x), rows):
            got, contrib = walk.run(x[start : start + rows])
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, expected[start : start + rows])
            np.testing.assert_array_equal(contrib, expected_contrib[start : start + rows])


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.one_of(
                st.floats(-1e4, 1e4, width=32, allow_nan=False),
                st.just(float("nan")),
            ),
            min_size=N_FEATURES,
            max_size=N_FEATURES,
        ),
        min_size=1,
        max_size=WALK_MAX_ROWS,
    )
)
def test_any_rows_give_xgboost_s_answer(
    deep: tuple[xgb.Booster, TreeWalk], rows: list[list[float]]
) -> None:
    booster, walk = deep
    x = np.asarray(rows, dtype=np.float32)
    expected, expected_contrib = _xgboost(booster, x)
    got, contrib = walk.run(x)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(contrib, expected_contrib)


def test_values_exactly_at_a_threshold_go_where_xgboost_sends_them(
    deep: tuple[xgb.Booster, TreeWalk],
) -> None:
    booster, walk = deep
    split = walk.feature < walk.n_features
    rows = np.zeros((int(split.sum()), N_FEATURES), dtype=np.float32)
    rows[np.arange(len(rows)), walk.feature[split]] = walk.threshold[split]
    expected, expected_contrib = _xgboost(booster, rows)
    got, contrib = zip(*(walk.run(rows[i : i + 1]) for i in range(len(rows))), strict=True)
    np.testing.assert_array_equal(np.concatenate(got), expected)
    np.testing.assert_array_equal(np.concatenate(contrib), expected_contrib)


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "reg:squarederror"},
        {"objective": "binary:logitraw"},
        {"objective": "multi:softprob", "num_class": 3},
        {"objective": "binary:logistic", "num_parallel_tree": 2},
        {"objective": "binary:logistic", "booster": "dart"},
    ],
    ids=["regression", "logitraw", "multiclass", "forest", "dart"],
)
def test_models_it_does_not_reproduce_get_no_walk(params: dict[str, object]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = rng.integers(0, 3 if "num_class" in params else 2, 300)
    booster = xgb.train({"nthread": 1, **params}, xgb.DMatrix(x, label=y), num_boost_round=3)
    assert TreeWalk.from_booster(booster) is None


def test_categorical_splits_get_no_walk() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"c": pd.Categorical(rng.choice(list("abcd"), 500)), "v": rng.normal(size=500)}
    )
    y = (frame["c"] == "a").astype(int) | (frame["v"] > 1)
    booster = xgb.train(
        {"objective": "binary:logistic", "nthread": 1, "tree_method": "hist"},
        xgb.DMatrix(frame, label=y, enable_categorical=True),
        num_boost_round=3,
    )
    assert TreeWalk.from_booster(booster) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda w: {"base_margin": np.float32(w.base_margin + np.float32(1e-3))},
        lambda w: {"threshold": (w.threshold * np.float32(1.01)).astype(np.float32)},
        lambda w: {"mean": w.mean * np.float32(1.0001)},
    ],
    ids=["base margin", "thresholds", "node means"],
)
def test_the_probe_check_catches_any_difference(
    deep: tuple[xgb.Booster, TreeWalk], tamper: object
) -> None:
    booster, walk = deep
    assert walk._mismatch(booster) is None
    changed = dataclasses.replace(walk, **tamper(walk))  # type: ignore[operator]
    assert changed._mismatch(booster) is not None
