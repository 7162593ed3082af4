"""The API follows the model registry without a restart (real Redis and Feast, nothing mocked).

One in-process API (FastAPI's TestClient, its one scoring thread) serves a small world's model
from a registry. A second model, trained on another window with fewer features, is set as the
shadow: decisions then carry its score and version, and the champion's scores and actions are
unchanged. It is promoted: the next decisions come from it, with exactly the scores it gave as
the shadow, and drift monitoring restarts against its training baseline. A promoted artifact tampered with before the API looks is refused: the API keeps
scoring with the previous model and counts the failure.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fraudstream.features import MODEL_FEATURES
from fraudstream.model import MODEL_FILE, load_artifact
from fraudstream.publish import event_payloads
from fraudstream.registry import ModelRegistry
from fraudstream.scoring import build_scorer
from fraudstream.stack import resolve_endpoints
from serving.app import create_app
from training.evaluate import Split
from training.train import train

from .world import build_world

pytestmark = pytest.mark.integration

POLL_S = 0.2


def test_api_switches_to_a_promoted_model_and_logs_a_shadow_without_restart(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    world = build_world(tmp_path, kafka_bootstrap, redis_url, seed=52, held_out=60)
    settings = world.settings.model_copy(
        update={"model": world.settings.model.model_copy(update={"poll_interval_s": POLL_S})}
    )
    registry = ModelRegistry(settings.model.registry_path)
    v1 = registry.register(settings.model.dir)
    today = datetime.now(UTC).date()
    # another feature list (no terminal fraud runs): the shadow builds its own columns
    fewer = [f for f in MODEL_FEATURES if not f.name.startswith("terminal_") or "risk" in f.name]
    other = train(
        world.past,
        Split(today - timedelta(days=20)),
        tmp_path / "other",
        world.store,
        features=fewer,
        backfill_first=False,
    )
    v2 = registry.register(other.out_dir)
    assert registry.champion() == v1 and v2 != v1

    scorer = build_scorer(settings, resolve_endpoints(settings))
    app = create_app(settings, scorer, redis_url=redis_url)
    body = {"transactions": [e.to_json_dict() for e in event_payloads(world.new.head(50))]}

    def score() -> list[dict[str, Any]]:
        time.sleep(POLL_S * 1.5)  # the registry is looked at, at most every POLL_S
        answer = client.post("/v1/score/batch", json=body)
        assert answer.status_code == 200, answer.text
        decisions: list[dict[str, Any]] = answer.json()["decisions"]
        return decisions

    with TestClient(app) as client:
        first = score()
        assert {d["model_version"] for d in first} == {v1}
        assert {d["shadow_model_version"] for d in first} == {None}
        assert {d["shadow_score"] for d in first} == {None}

        registry.set_shadow(v2)
        shadowed = score()
        assert {d["model_version"] for d in shadowed} == {v1}
        assert {d["shadow_model_version"] for d in shadowed} == {v2}
        for a, b in zip(first, shadowed, strict=True):  # the shadow never acts
            assert (a["score"], a["action"]) == (b["score"], b["action"])
        shadow_scores = [d["shadow_score"] for d in shadowed]
        assert max(abs(s - d["score"]) for s, d in zip(shadow_scores, first, strict=True)) > 0

        # drift: the champion's window holds both batches so far (a new shadow keeps it)
        assert "fraudstream_api_drift_window_events 100.0" in client.get("/metrics").text

        registry.promote(v2)
        promoted = score()
        # ...and restarts against the new champion's own training baseline
        assert "fraudstream_api_drift_window_events 50.0" in client.get("/metrics").text
        assert {d["model_version"] for d in promoted} == {v2}
        assert {d["shadow_model_version"] for d in promoted} == {None}
        for s, d in zip(shadow_scores, promoted, strict=True):
            assert d["score"] == pytest.approx(s, abs=1e-9)
        # its reasons name only its own features
        assert {r["feature"] for d in promoted for r in d["reasons"]} <= {f.name for f in fewer}

        # a promoted artifact tampered with before the API loads it: refused, v2 keeps scoring
        registry.rollback()
        registry.promote(v2)
        serving = client.get("/v1/model").json()["serving"]
        assert serving["champion"] == v2
        registry.rollback()  # champion v1 again...
        model_file = registry.path(v1) / MODEL_FILE
        data = bytearray(model_file.read_bytes())
        data[len(data) // 2] ^= 0x01
        model_file.write_bytes(bytes(data))  # ...but its file no longer matches its SHA-256
        kept = score()
        assert {d["model_version"] for d in kept} == {v2}
        for a, b in zip(promoted, kept, strict=True):
            assert a["score"] == b["score"]

        model = client.get("/v1/model").json()
        assert model["model_version"] == v2
        assert model["serving"] == {
            "champion": v2,
            "shadow": None,
            "reloads": 2,
            "reload_failures": 1,
        }
        metrics = client.get("/metrics").text
        assert "fraudstream_api_model_reloads_total 2.0" in metrics
        assert "fraudstream_api_model_reload_failures_total 1.0" in metrics
        assert f'fraudstream_api_model_serving{{role="champion",version="{v2}"}} 1.0' in metrics
    assert load_artifact(other.out_dir).version == v2
