"""The model registry: versions kept, promote / rollback / shadow with their history, atomic
writes, tampered artifacts refused, and the watcher the worker and the API poll."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from fraudstream.model import MODEL_FILE, ModelError, save_artifact
from fraudstream.registry import (
    REGISTRY_FILE,
    ModelRegistry,
    ModelWatcher,
    RegistryError,
    ServingModels,
    load_serving,
)

pytestmark = pytest.mark.unit


def make_artifact(root: Path, version: str, rounds: int = 2) -> Path:
    rows = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.2, 0.9]])
    matrix = xgb.DMatrix(rows, label=[0, 1, 1, 0], feature_names=["a", "b"])
    booster = xgb.train({"objective": "binary:logistic", "nthread": 1}, matrix, rounds)
    manifest = {
        "model_version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "features": [{"name": "a"}, {"name": "b"}],
        "thresholds": {"review": 0.5, "decline": 0.9},
        "metrics": {"test": {"auc_roc": 0.9, "average_precision": 0.5}},
    }
    return save_artifact(root / f"build-{version}", booster, manifest)


def tamper(path: Path) -> None:
    model = path / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def test_register_keeps_every_version_and_the_first_is_champion(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    assert not registry.exists() and registry.champion() is None
    assert registry.register(make_artifact(tmp_path, "v1")) == "v1"
    assert registry.register(make_artifact(tmp_path, "v2")) == "v2"
    assert registry.champion() == "v1"  # a later version is only registered
    assert registry.versions() == ["v1", "v2"]
    assert registry.load("v2").version == "v2"
    rows = {r["version"]: r for r in registry.list()}
    assert rows["v1"]["role"] == "champion" and rows["v2"]["role"] == ""
    assert rows["v1"]["average_precision"] == 0.5
    with pytest.raises(RegistryError, match="already registered"):
        registry.register(make_artifact(tmp_path / "again", "v1", rounds=3))
    assert registry.load("v1").booster.num_boosted_rounds() == 2  # never overwritten


def test_promote_rollback_and_history(registry: ModelRegistry, tmp_path: Path) -> None:
    for v in ("a", "b", "c"):
        registry.register(make_artifact(tmp_path, v))
    registry.promote("b")
    registry.promote("c")
    assert registry.champion() == "c"
    assert registry.rollback() == "b"
    assert registry.rollback() == "a"
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback()
    registry.promote("c")
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote("c")
    with pytest.raises(RegistryError, match="unknown model version"):
        registry.promote("nope")
    history = registry.history()
    assert [(h["action"], h["version"]) for h in history] == [
        ("register", "a"),
        ("promote", "a"),
        ("register", "b"),
        ("register", "c"),
        ("promote", "b"),
        ("promote", "c"),
        ("rollback", "b"),
        ("rollback", "a"),
        ("promote", "c"),
    ]
    assert history[6]["previous"] == "c"
    for entry in history:
        assert datetime.fromisoformat(entry["at"]).tzinfo == UTC


def test_shadow_is_another_model_and_promotion_clears_it(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    registry.register(make_artifact(tmp_path, "a"))
    registry.register(make_artifact(tmp_path, "b"))
    with pytest.raises(RegistryError, match="is the champion"):
        registry.set_shadow("a")
    registry.set_shadow("b")
    serving = load_serving(registry, tmp_path / "unused")
    assert serving.key == ("a", "b")
    registry.promote("b")
    assert (registry.champion(), registry.shadow()) == ("b", None)
    registry.set_shadow("a")
    registry.set_shadow(None)
    assert registry.shadow() is None


def test_a_tampered_artifact_is_refused_and_the_champion_stays(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    registry.register(make_artifact(tmp_path, "good"))
    registry.register(make_artifact(tmp_path, "bad"))
    tamper(registry.path("bad"))
    with pytest.raises(ModelError, match="SHA-256"):
        registry.promote("bad")
    with pytest.raises(ModelError, match="SHA-256"):
        registry.set_shadow("bad")
    assert registry.champion() == "good" and registry.shadow() is None
    broken = make_artifact(tmp_path, "broken")
    tamper(broken)
    with pytest.raises(ModelError, match="SHA-256"):
        registry.register(broken)
    assert registry.versions() == ["bad", "good"]


def test_a_failed_write_leaves_the_previous_document_whole(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.register(make_artifact(tmp_path, "a"))
    registry.register(make_artifact(tmp_path, "b"))
    before = (registry.root / REGISTRY_FILE).read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        registry.promote("b")
    monkeypatch.undo()
    assert (registry.root / REGISTRY_FILE).read_bytes() == before
    assert registry.champion() == "a"
    assert [p.name for p in registry.root.iterdir() if p.name.startswith(".registry")] == []


def test_no_registry_serves_the_model_dir(registry: ModelRegistry, tmp_path: Path) -> None:
    plain = make_artifact(tmp_path, "plain")
    assert load_serving(registry, plain).key == ("plain", None)


def test_the_watcher_switches_once_per_change_and_refuses_a_tampered_model(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    for v in ("a", "b", "c"):
        registry.register(make_artifact(tmp_path, v))
    now = [0.0]
    failures: list[str] = []
    watcher = ModelWatcher(
        registry,
        load_serving(registry, tmp_path),
        interval_s=5.0,
        clock=lambda: now[0],
        on_failure=failures.append,
    )
    assert watcher.poll() is None  # not due
    registry.promote("b")
    now[0] = 4.9
    assert not watcher.due() and watcher.poll() is None
    now[0] = 5.0
    models = watcher.poll()
    assert isinstance(models, ServingModels) and models.key == ("b", None)
    watcher.switched(models)
    now[0] = 10.0
    assert watcher.poll() is None  # nothing changed
    # a champion tampered with after its promotion: refused once, the old one kept
    state = json.loads((registry.root / REGISTRY_FILE).read_text())
    tamper(registry.path("c"))
    state["champion"] = "c"
    (registry.root / REGISTRY_FILE).write_text(json.dumps(state))
    now[0] = 15.0
    assert watcher.poll() is None
    assert watcher.failures == 1 and "SHA-256" in failures[0]
    now[0] = 20.0
    assert watcher.poll() is None and watcher.failures == 1  # not retried until it changes
    assert watcher.current.key == ("b", None) and watcher.reloads == 1


def test_a_trained_model_becomes_champion_unless_told_not_to(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    assert registry.register_trained(make_artifact(tmp_path, "a"), promote=False) == "a"
    assert registry.champion() == "a"  # the first one always: something must serve
    registry.register_trained(make_artifact(tmp_path, "b"), promote=False)
    assert registry.champion() == "a"
    registry.register_trained(make_artifact(tmp_path, "c"))
    assert registry.champion() == "c" and registry.rollback() == "a"


def test_the_serving_metrics_name_the_versions_in_use() -> None:
    from fraudstream.metrics import WorkerMetrics

    metrics = WorkerMetrics(60.0)
    metrics.models.set_serving("a", "b")
    metrics.models.reloads.inc()
    text = metrics.render().decode()
    assert 'fraudstream_worker_model_serving{role="champion",version="a"} 1.0' in text
    assert 'fraudstream_worker_model_serving{role="shadow",version="b"} 1.0' in text
    assert "fraudstream_worker_model_reloads_total 1.0" in text
    assert "fraudstream_worker_model_reload_failures_total 0.0" in text
    metrics.models.set_serving("b", None)
    text = metrics.render().decode()
    assert 'version="a"' not in text and 'role="shadow"' not in text


def test_rollback_to_the_shadow_clears_the_shadow(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.register(make_artifact(tmp_path, "a"))
    registry.register(make_artifact(tmp_path, "b"))
    registry.promote("b")
    registry.set_shadow("a")
    assert registry.rollback() == "a"
    assert (registry.champion(), registry.shadow()) == ("a", None)
    assert load_serving(registry, tmp_path / "unused").key == ("a", None)


GOOD_DOCUMENT = {"champion": "v1", "shadow": None, "lineage": ["v1"], "history": []}


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ({}, "champion: Field required; shadow: Field required; lineage: Field required"),
        ([], "not a JSON object"),
        ("v1", "not a JSON object"),
        ({**GOOD_DOCUMENT, "champion": 1}, "champion: Input should be a valid string"),
        ({**GOOD_DOCUMENT, "lineage": "v1"}, "lineage: Input should be a valid list"),
        ({**GOOD_DOCUMENT, "history": {}}, "history: Input should be a valid list"),
        ({**GOOD_DOCUMENT, "history": [{"at": "now"}]}, r"history\.0\.action: Field required"),
        ({**GOOD_DOCUMENT, "championn": "v1"}, "championn: Extra inputs are not permitted"),
    ],
)
@pytest.mark.parametrize("action", ["list", "rollback", "promote", "shadow off"])
def test_a_registry_document_of_the_wrong_shape_is_refused_naming_it(
    registry: ModelRegistry, tmp_path: Path, document: object, match: str, action: str
) -> None:
    registry.register(make_artifact(tmp_path, "v1"))
    registry.file.write_text(json.dumps(document))
    run = {
        "list": registry.list,
        "rollback": registry.rollback,
        "promote": lambda: registry.promote("v1"),
        "shadow off": lambda: registry.set_shadow(None),
    }[action]
    with pytest.raises(RegistryError, match=match) as caught:
        run()
    assert str(caught.value).startswith(f"{registry.file}: ")
    assert json.loads(registry.file.read_text()) == document  # nothing written over it


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"{bad", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"model_version": "v1"}', "model_file: Field required"),
    ],
)
@pytest.mark.parametrize("action", ["list", "promote", "manifest"])
def test_a_version_whose_manifest_is_no_manifest_is_refused_naming_it(
    registry: ModelRegistry, tmp_path: Path, content: bytes, match: str, action: str
) -> None:
    registry.register(make_artifact(tmp_path, "v1"))
    registry.register(make_artifact(tmp_path, "v2"))
    path = registry.path("v2") / "manifest.json"
    path.write_bytes(content)
    run = {
        "list": registry.list,
        "promote": lambda: registry.promote("v2"),
        "manifest": lambda: registry.manifest("v2"),
    }[action]
    with pytest.raises(RegistryError, match=match) as caught:
        run()
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)
    assert registry.champion() == "v1"


@pytest.mark.parametrize(
    "metrics", ["n/a", {"test": "n/a"}, {"test": [1]}], ids=["metrics", "test", "list"]
)
def test_models_list_refuses_metrics_of_the_wrong_shape(
    registry: ModelRegistry, tmp_path: Path, metrics: object
) -> None:
    registry.register(make_artifact(tmp_path, "v1"))
    path = registry.path("v1") / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "metrics": metrics}))
    with pytest.raises(RegistryError, match=r"metrics(\.test)?: Input should be a valid"):
        registry.list()
