"""Model artifacts: an XGBoost model file (UBJ) and ``manifest.json``, never pickle.

:func:`save_artifact` writes both atomically; :func:`load_artifact` verifies the SHA-256
of the model file against the manifest before XGBoost reads a byte of it, and checks
that the model's feature names are the manifest's, in order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import numpy as np
import xgboost as xgb
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fraudstream.errors import FraudstreamError, describe_validation
from fraudstream.outputs import check_output_dir
from fraudstream.trees import WALK_MAX_ROWS, TreeWalk, learner_of
from fraudstream.treeshap import LeafShap

log = logging.getLogger(__name__)

MODEL_FILE = "model.ubj"
MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1


class ModelError(FraudstreamError):
    """A model artifact is missing, tampered with, or inconsistent."""


Checked = TypeVar("Checked", bound=BaseModel)


class _ManifestPart(BaseModel):
    """Strict types (no string for a number); keys the code does not read are kept."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


class ManifestFeature(_ManifestPart):
    name: str = Field(min_length=1)


class ManifestThresholds(_ManifestPart):
    """Scores are probabilities; training caps ``review`` at ``decline``."""

    review: float = Field(ge=0, le=1)
    decline: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _review_not_above_decline(self) -> Self:
        if self.review > self.decline:
            raise ValueError(f"review {self.review} is above decline {self.decline}")
        return self


class ManifestMetrics(_ManifestPart):
    test: dict[str, Any] = Field(default_factory=dict)


class Manifest(_ManifestPart):
    """The fields of ``manifest.json`` that loading, scoring and ``models list`` read."""

    model_version: str = Field(min_length=1)
    model_file: str = Field(min_length=1)
    model_sha256: str = Field(min_length=1)
    features: list[ManifestFeature] = Field(min_length=1)
    thresholds: ManifestThresholds
    created_at: str | None = None
    metrics: ManifestMetrics | None = None


def read_checked_json(
    path: Path, schema: type[Checked], error: type[FraudstreamError]
) -> tuple[dict[str, Any], Checked]:
    """The JSON object in the file at ``path``, as written and as ``schema`` checks it;
    ``error`` naming the file (and the field) when it is not one. (The manifest here, the
    registry's ``registry.json`` in :mod:`fraudstream.registry`.)"""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: not a JSON object")
    try:
        return data, schema.model_validate(data)
    except ValidationError as exc:
        raise error(f"{path}: {describe_validation(exc)}") from None


def read_manifest(path: Path) -> tuple[dict[str, Any], Manifest]:
    """The manifest at ``path`` as written and as checked; :class:`ModelError` naming the
    file and the field when it is not one."""
    try:
        return read_checked_json(path, Manifest, ModelError)
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read ({exc.strerror})") from None


def _xgboost_message(exc: xgb.core.XGBoostError) -> str:
    """XGBoost's first line without its time and source file (and no C++ frames)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", first)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Thresholds:
    """Scores at or above ``decline`` decline; at or above ``review`` go to review."""

    review: float
    decline: float

    def action(self, score: float) -> Literal["approve", "review", "decline"]:
        if score >= self.decline:
            return "decline"
        if score >= self.review:
            return "review"
        return "approve"


_F32_MAX = float(np.finfo(np.float32).max)


def model_matrix(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` as XGBoost reads it: float32, NaN for missing. A value beyond float32's
    range (an amount over 3.4e38, which the event schema accepts) becomes its largest finite
    value, which takes the same branch at every split: XGBoost refuses ``inf``."""
    with np.errstate(over="ignore"):
        out = np.asarray(matrix).astype(np.float32)
    if np.isinf(out).any():
        np.clip(out, -_F32_MAX, _F32_MAX, out=out)
    return out


@dataclass(frozen=True)
class ModelArtifact:
    """A verified, loaded model with its manifest."""

    path: Path
    manifest: dict[str, Any]
    booster: xgb.Booster
    #: XGBoost's predictions for small batches without a ``DMatrix`` (None: XGBoost only).
    walk: TreeWalk | None = None
    #: XGBoost's exact SHAP values from per-leaf tables (None: XGBoost computes them).
    shap: LeafShap | None = None

    @property
    def version(self) -> str:
        return str(self.manifest["model_version"])

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in self.manifest["features"]]

    @property
    def thresholds(self) -> Thresholds:
        t = self.manifest["thresholds"]
        return Thresholds(review=float(t["review"]), decline=float(t["decline"]))

    def inputs(self, matrix: np.ndarray) -> ModelInput:
        """``matrix`` (columns in :attr:`feature_names` order) as the model reads it, built
        once per batch for :meth:`predict_inputs`, :meth:`explain` and a shadow model."""
        if matrix.ndim != 2 or matrix.shape[1] != len(self.feature_names):
            raise ModelError(
                f"expected {len(self.feature_names)} columns, got shape {matrix.shape}"
            )
        return ModelInput(model_matrix(matrix))

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Fraud probability per row of ``matrix`` (columns in :attr:`feature_names` order)."""
        return self.predict_inputs(self.inputs(matrix))

    def predict_inputs(self, inputs: ModelInput) -> np.ndarray:
        """:meth:`predict` of :meth:`inputs`: XGBoost's, bit for bit (small batches through
        the tree walk, :mod:`fraudstream.trees`)."""
        walked = self._walked(inputs)
        if walked is not None:
            return walked[0].astype(np.float64)
        return np.asarray(
            self.booster.predict(inputs.dmatrix, validate_features=False), dtype=np.float64
        )

    def contributions(self, matrix: np.ndarray, *, exact: bool = True) -> np.ndarray:
        """Contributions per feature (last column: bias), in log-odds; they sum to the margin.

        ``exact``: SHAP values (TreeSHAP, about 150 µs a row for 300 trees of depth 4);
        otherwise XGBoost's approximation (``approx_contribs``: each split's change of the
        expected value credited to its feature, about 12 µs a row). Always XGBoost's own
        computation (the reference :meth:`explain` is checked against).
        """
        return self._contributions(self.inputs(matrix).dmatrix, exact=exact)

    def explain(self, inputs: ModelInput, exact: np.ndarray) -> np.ndarray:
        """Contributions per feature (no bias column) of each row of :meth:`inputs`: SHAP
        values for the rows where ``exact`` is true, the approximation for the others.

        SHAP values come from the per-leaf tables of :mod:`fraudstream.treeshap` when the model
        has them (XGBoost's within ``treeshap.TOLERANCE``, 2-4x faster), else from XGBoost."""
        if exact.all():
            return self._exact(inputs, None)
        walked = self._walked(inputs)
        if walked is not None:
            out = walked[1][:, :-1].astype(np.float64)
        else:
            out = self._contributions(inputs.dmatrix, exact=False)[:, :-1]
        if exact.any():
            rows = np.flatnonzero(exact)
            out[rows] = self._exact(inputs, rows)
        return out

    def _exact(self, inputs: ModelInput, rows: np.ndarray | None) -> np.ndarray:
        """SHAP values (no bias column) of ``rows`` of ``inputs`` (None: all)."""
        if self.shap is not None:
            values = inputs.values if rows is None else inputs.values[rows]
            return self.shap.values(values)
        dmatrix = inputs.dmatrix if rows is None else inputs.dmatrix.slice(rows)
        return self._contributions(dmatrix, exact=True)[:, :-1]

    def _walked(self, inputs: ModelInput) -> tuple[np.ndarray, np.ndarray] | None:
        """The tree walk's probabilities and approximate contributions of a small batch
        (computed once per batch and model), or ``None``: XGBoost's turn."""
        if self.walk is None or len(inputs.values) > WALK_MAX_ROWS:
            return None
        key = id(self)
        result = inputs.walked.get(key)
        if result is None:
            result = inputs.walked[key] = self.walk.run(inputs.values)
        return result

    def _contributions(self, dmatrix: xgb.DMatrix, *, exact: bool) -> np.ndarray:
        return np.asarray(
            self.booster.predict(
                dmatrix, pred_contribs=True, approx_contribs=not exact, validate_features=False
            )
        )


class ModelInput:
    """A batch's feature matrix as models read it (float32, missing as NaN), with XGBoost's
    ``DMatrix`` built on first use (no feature names on it: XGBoost would read them back
    through its C API on every call to compare them; the columns are ours, in order)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self._dmatrix: xgb.DMatrix | None = None
        #: Tree-walk results per model (``id`` of the :class:`ModelArtifact`).
        self.walked: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def dmatrix(self) -> xgb.DMatrix:
        if self._dmatrix is None:
            self._dmatrix = xgb.DMatrix(self.values, nthread=1)
        return self._dmatrix


def is_artifact(path: Path) -> bool:
    """Whether ``path`` holds a model artifact: a ``manifest.json`` with a ``model_version``."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "model_version" in manifest


def check_artifact_dir(
    out_dir: Path, option: str = "--out", inputs: Iterable[Path | None] = ()
) -> Path:
    """Refuse ``out_dir`` (named ``option`` in messages) unless it is missing, an empty
    directory or a model artifact (what :func:`save_artifact` may replace), and does not
    hold one of ``inputs``."""
    check_output_dir(out_dir, option, inputs=inputs)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_artifact(out_dir):
        raise ModelError(
            f"{option} {out_dir} exists and is not a model artifact (no {MANIFEST_FILE} with a "
            "model_version); refusing to replace it: give a new or empty directory"
        )
    return out_dir


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Rename ``staging`` to ``out_dir``. A previous ``out_dir`` is moved aside under a fresh
    temporary name, removed after the swap, and put back when the swap fails."""
    if not out_dir.exists() and not out_dir.is_symlink():
        staging.rename(out_dir)
        return
    holder = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.replaced.", dir=out_dir.parent))
    backup = holder / out_dir.name
    try:
        out_dir.rename(backup)
    except BaseException:
        holder.rmdir()
        raise
    try:
        staging.rename(out_dir)
    except BaseException:
        backup.rename(out_dir)  # the previous artifact stays in place
        holder.rmdir()
        raise
    shutil.rmtree(holder, ignore_errors=True)


def save_artifact(
    out_dir: Path,
    booster: xgb.Booster,
    manifest: dict[str, Any],
    extra_files: dict[str, Path] | None = None,
) -> Path:
    """Write the model, its manifest and ``extra_files`` (reports) into ``out_dir``, atomically.

    ``out_dir`` may be missing, an empty directory or a model artifact (which is replaced);
    anything else is refused (:func:`check_artifact_dir`)."""
    out_dir = check_artifact_dir(Path(out_dir), "model directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model_path = staging / MODEL_FILE
        booster.save_model(str(model_path))
        full = {
            "manifest_schema_version": MANIFEST_SCHEMA_VERSION,
            **manifest,
            "model_file": MODEL_FILE,
            "model_sha256": sha256_file(model_path),
            "xgboost_version": xgb.__version__,
        }
        for name, source in (extra_files or {}).items():
            shutil.copy2(source, staging / name)
        (staging / MANIFEST_FILE).write_text(json.dumps(full, indent=2, default=str))
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def load_artifact(path: Path) -> ModelArtifact:
    """Load and verify the artifact in ``path``; raise :class:`ModelError` naming the problem."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ModelError(f"{manifest_path}: no model manifest (train one with `fraudstream train`)")
    manifest, checked = read_manifest(manifest_path)
    model_path = path / checked.model_file
    if Path(checked.model_file).name != checked.model_file or model_path.suffix not in (
        ".ubj",
        ".json",
    ):
        raise ModelError(f"{manifest_path}: model_file must be a .ubj or .json file beside it")
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file missing")
    actual = sha256_file(model_path)
    if actual != checked.model_sha256:
        raise ModelError(
            f"{model_path}: SHA-256 {actual} does not match the manifest's "
            f"{checked.model_sha256}; refusing to load"
        )
    booster = xgb.Booster()
    try:
        booster.load_model(str(model_path))
    except xgb.core.XGBoostError as exc:
        raise ModelError(f"{model_path}: not an XGBoost model ({_xgboost_message(exc)})") from None
    booster.set_param({"nthread": 1})
    names = [f.name for f in checked.features]
    if booster.feature_names is not None and list(booster.feature_names) != names:
        raise ModelError(
            f"{model_path}: model features {booster.feature_names} != manifest {names}"
        )
    if booster.num_features() != len(names):
        raise ModelError(
            f"{model_path}: the model reads {booster.num_features()} features, "
            f"the manifest names {len(names)}"
        )
    log.info("loaded model %s from %s", manifest["model_version"], path)
    learner = learner_of(booster)  # parsed once for both
    return ModelArtifact(
        path=path,
        manifest=manifest,
        booster=booster,
        walk=TreeWalk.from_booster(booster, learner),
        shap=LeafShap.from_booster(booster, learner),
    )


def environment_threads() -> int:
    """Threads for training (scoring always uses one)."""
    return max(1, min(2, os.cpu_count() or 1))
