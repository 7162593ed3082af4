"""The model artifact's scoring calls: one prepared input per batch for scores and reasons
gives exactly what XGBoost's own calls give, row by row (small batches go through the tree
walk, larger ones through one DMatrix)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from fraudstream.model import ModelArtifact, ModelError, load_artifact, save_artifact
from fraudstream.trees import WALK_MAX_ROWS

pytestmark = pytest.mark.unit

NAMES = [f"f{i}" for i in range(6)]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> ModelArtifact:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, len(NAMES)))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) ** 2 > 1).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(x, label=y, feature_names=NAMES),
        num_boost_round=30,
    )
    manifest = {
        "model_version": "test-1",
        "features": [{"name": n} for n in NAMES],
        "thresholds": {"review": 0.5, "decline": 0.9},
    }
    out = save_artifact(Path(tmp_path_factory.mktemp("model")) / "m", booster, manifest)
    return load_artifact(out)


def _matrix(rows: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(NAMES)))
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


@pytest.mark.parametrize("rows", [1, WALK_MAX_ROWS, WALK_MAX_ROWS + 1, 300])
def test_scores_equal_xgboost_inplace_predict(artifact: ModelArtifact, rows: int) -> None:
    assert artifact.walk is not None
    x = _matrix(rows)
    expected = artifact.booster.inplace_predict(x.astype(np.float32))
    np.testing.assert_array_equal(artifact.predict(x), expected)
    inputs = artifact.inputs(x)
    np.testing.assert_array_equal(artifact.predict_inputs(inputs), expected)
    assert bool(inputs.walked) == (rows <= WALK_MAX_ROWS)  # which path scored them


@pytest.mark.parametrize("rows", [5, 50])  # the tree walk's approximation, and XGBoost's
@pytest.mark.parametrize("pattern", ["none", "all", "mixed"])
def test_explain_gives_each_row_its_own_method(
    artifact: ModelArtifact, pattern: str, rows: int
) -> None:
    x = _matrix(rows)
    exact = {
        "none": np.zeros(rows, bool),
        "all": np.ones(rows, bool),
        "mixed": np.arange(rows) % 3 == 0,
    }[pattern]
    assert artifact.shap is not None  # SHAP values from the tables, checked against XGBoost's
    inputs = artifact.inputs(x)
    artifact.predict_inputs(inputs)
    got = artifact.explain(inputs, exact)
    shap = artifact.contributions(x, exact=True)[:, :-1]
    approx = artifact.contributions(x, exact=False)[:, :-1]
    np.testing.assert_allclose(got[exact], shap[exact], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got[~exact], approx[~exact])
    if pattern == "mixed":  # the two methods differ, so the test tells them apart
        assert not np.allclose(shap[~exact], approx[~exact])
    # with the bias, each row's contributions sum to its margin
    full = artifact.contributions(x, exact=True)
    margin = artifact.booster.predict(
        artifact.inputs(x).dmatrix, output_margin=True, validate_features=False
    )
    np.testing.assert_allclose(full.sum(axis=1), margin, atol=1e-5)


def test_a_matrix_of_the_wrong_width_is_refused(artifact: ModelArtifact) -> None:
    with pytest.raises(ModelError, match="expected 6 columns"):
        artifact.predict(np.zeros((2, 5)))


def test_a_tampered_model_file_is_refused(artifact: ModelArtifact, tmp_path: Path) -> None:
    copy = save_artifact(tmp_path / "copy", artifact.booster, artifact.manifest)
    with (copy / "model.ubj").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelError, match="SHA-256"):
        load_artifact(copy)


def test_a_failed_replacement_leaves_the_previous_artifact_in_place(
    artifact: ModelArtifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "current"
    booster = artifact.booster
    save_artifact(out, booster, {**artifact.manifest, "model_version": "old"})
    real_rename = Path.rename

    def rename(self: Path, target: Path) -> Path:  # the staging directory's rename fails
        if Path(target) == out and self.name != out.name:  # (the moved-aside one is "current")
            raise OSError(5, "Input/output error")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="Input/output"):
        save_artifact(out, booster, {**artifact.manifest, "model_version": "new"})
    monkeypatch.undo()
    assert load_artifact(out).version == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current"]


def test_replacing_an_artifact_leaves_a_sibling_old_directory_alone(
    artifact: ModelArtifact, tmp_path: Path
) -> None:
    out = tmp_path / "current"
    save_artifact(out, artifact.booster, {**artifact.manifest, "model_version": "old"})
    (tmp_path / "current.old").mkdir()
    (tmp_path / "current.old" / "notes.txt").write_text("mine")
    save_artifact(out, artifact.booster, {**artifact.manifest, "model_version": "new"})
    assert load_artifact(out).version == "new"
    assert (tmp_path / "current.old" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "current.old"]


def test_a_directory_that_is_not_an_artifact_is_never_replaced(
    artifact: ModelArtifact, tmp_path: Path
) -> None:
    out = tmp_path / "registry"
    (out / "versions").mkdir(parents=True)
    (out / "registry.json").write_text("{}")
    with pytest.raises(ModelError, match="is not a model artifact"):
        save_artifact(out, artifact.booster, artifact.manifest)
    assert sorted(p.name for p in out.iterdir()) == ["registry.json", "versions"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry"]
    (tmp_path / "empty").mkdir()  # an empty directory (a fresh volume) is written into
    assert load_artifact(save_artifact(tmp_path / "empty", artifact.booster, artifact.manifest))


@pytest.mark.parametrize("rows", [1, WALK_MAX_ROWS + 1])
def test_values_beyond_float32_are_scored_as_its_largest(
    artifact: ModelArtifact, rows: int
) -> None:
    """An amount of 1e39 is a valid event (finite, > 0) but ``inf`` in float32, which
    XGBoost's DMatrix refuses: both paths score it as float32's largest value."""
    x = _matrix(rows, seed=3)
    huge, largest = x.copy(), x.copy()
    huge[:, 0], huge[:, 1] = 1e39, -1e300
    largest[:, 0], largest[:, 1] = np.finfo(np.float32).max, -np.finfo(np.float32).max
    scores = artifact.predict(huge)
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, artifact.predict(largest))
    inputs = artifact.inputs(huge)
    reasons = artifact.explain(inputs, np.ones(rows, dtype=bool))
    assert np.isfinite(reasons).all()
