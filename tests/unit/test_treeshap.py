"""The per-leaf SHAP tables give XGBoost's exact ``pred_contribs`` (within the documented
tolerance) for models of several shapes, any rows, rows at the thresholds and features split
more than once on a path; and they stay off where they would not (other objectives, tables
too large, or any difference on the probe rows)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream import treeshap
from fraudstream.treeshap import TOLERANCE, LeafShap
from tests.unit.test_trees import MODELS, N_FEATURES, _train

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module", params=[m for m in MODELS if m != "depth 8, sampled"])
def model(request: pytest.FixtureRequest) -> tuple[xgb.Booster, LeafShap]:
    booster = _train(MODELS[request.param])
    tables = LeafShap.from_booster(booster)
    assert tables is not None
    return booster, tables


@pytest.fixture(scope="module")
def depth_six() -> tuple[xgb.Booster, LeafShap]:
    booster = _train({"objective": "binary:logistic", "max_depth": 6, "subsample": 0.8})
    tables = LeafShap.from_booster(booster)
    assert tables is not None
    return booster, tables


def _xgboost(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    contribs = booster.predict(xgb.DMatrix(x, nthread=1), pred_contribs=True)
    return np.asarray(contribs[:, :-1])


def _assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_array_less(np.abs(got - expected), TOLERANCE * (1 + np.abs(expected)))


def test_tables_give_xgboost_s_shap_values(model: tuple[xgb.Booster, LeafShap]) -> None:
    booster, tables = model
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(400, N_FEATURES)) * rng.choice([1.0, 100.0], N_FEATURES)).astype(
        np.float32
    )
    x[rng.random(x.shape) < 0.2] = np.nan
    expected = _xgboost(booster, x)
    assert np.abs(expected).max() > 0.1  # the values are not all near zero
    _assert_close(tables.values(x), expected)
    for i in (0, 7, 399):  # one row at a time takes its own branch of the code
        _assert_close(tables.values(x[i : i + 1]), expected[i : i + 1])


def test_a_feature_split_twice_on_a_path_counts_once(
    depth_six: tuple[xgb.Booster, LeafShap],
) -> None:
    booster, tables = depth_six
    steps = (tables.path_split != len(tables.split_feature) - 1).sum(axis=0)
    players = np.array([bin(b).count("1") for b in tables.all_bits.tolist()])
    assert (steps > players).sum() > 10  # such leaves exist in this model
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, N_FEATURES)).astype(np.float32)
    _assert_close(tables.values(x), _xgboost(booster, x))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.one_of(
                st.floats(-300, 300, width=32),
                st.just(float("nan")),
                st.sampled_from([0.0, -0.0, 1e30, -1e30]),
            ),
            min_size=N_FEATURES,
            max_size=N_FEATURES,
        ),
        min_size=1,
        max_size=20,
    )
)
def test_any_rows_give_xgboost_s_values(
    depth_six: tuple[xgb.Booster, LeafShap], rows: list[list[float]]
) -> None:
    booster, tables = depth_six
    x = np.asarray(rows, dtype=np.float32)
    _assert_close(tables.values(x), _xgboost(booster, x))


def test_values_exactly_at_a_threshold_go_where_xgboost_sends_them(
    depth_six: tuple[xgb.Booster, LeafShap],
) -> None:
    booster, tables = depth_six
    feature, threshold = tables.split_feature[:-1], tables.split_threshold[:-1]  # no padding
    rows = np.full((len(feature), N_FEATURES), np.nan, dtype=np.float32)
    rows[np.arange(len(rows)), feature] = threshold
    _assert_close(tables.values(rows), _xgboost(booster, rows))


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "reg:squarederror"},
        {"objective": "multi:softprob", "num_class": 3},
        {"objective": "binary:logistic", "booster": "dart"},
    ],
    ids=["regression", "multiclass", "dart"],
)
def test_models_it_does_not_read_get_no_tables(params: dict[str, object]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = rng.integers(0, 3 if "num_class" in params else 2, 300)
    booster = xgb.train({"nthread": 1, **params}, xgb.DMatrix(x, label=y), num_boost_round=3)
    assert LeafShap.from_booster(booster) is None


@pytest.mark.parametrize("limit", ["MAX_TABLE_BYTES", "MAX_DEPTH"])
def test_tables_too_large_or_too_deep_are_not_built(
    monkeypatch: pytest.MonkeyPatch, limit: str
) -> None:
    booster = _train(MODELS["depth 4"])
    assert LeafShap.from_booster(booster) is not None
    monkeypatch.setattr(treeshap, limit, 1024 if limit == "MAX_TABLE_BYTES" else 3)
    assert LeafShap.from_booster(booster) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: {"table": t.table * 1.001},
        lambda t: {"split_threshold": (t.split_threshold * np.float32(1.01))},
        lambda t: {"split_default_left": ~t.split_default_left},
    ],
    ids=["values", "thresholds", "missing values"],
)
def test_the_probe_check_catches_a_difference(
    depth_six: tuple[xgb.Booster, LeafShap], tamper: object
) -> None:
    booster, tables = depth_six
    assert tables._mismatch(booster) is None
    changed = dataclasses.replace(tables, **tamper(tables))  # type: ignore[operator]
    assert changed._mismatch(booster) is not None
