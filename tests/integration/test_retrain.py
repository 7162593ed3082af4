"""``fraudstream retrain --transactions``: a challenger that does not clear the margin is
registered, with its evaluation, but not promoted (real Redis and Feast, nothing mocked).

The small world's model is served from ``model.dir`` (no registry yet): retrain registers it
first, as the champion, then trains a challenger on the latest labelled window and evaluates
both on the same rows. With a margin no model can clear (AP + 1.0), the verdict is "keep".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.small_world import process_env, run_cli
from fraudstream.model import load_artifact
from fraudstream.registry import ModelRegistry

from .world import build_world

pytestmark = pytest.mark.integration


def test_a_challenger_below_the_margin_is_registered_not_promoted(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    world = build_world(tmp_path, kafka_bootstrap, redis_url, seed=71, held_out=0)
    data = tmp_path / "labelled.parquet"
    world.past.to_parquet(data, index=False)
    served = load_artifact(world.settings.model.dir).version
    env = process_env(world.settings, tmp_path / "stack")
    args = ["retrain", "--transactions", str(data), "--min-ap-gain", "1.0"]
    printed = run_cli(args, env, tmp_path)
    evaluation = json.loads(printed.strip().splitlines()[-1])
    assert "registered, not promoted" in printed

    registry = ModelRegistry(world.settings.model.registry_path)
    challenger = evaluation["challenger_version"]
    assert registry.champion() == served == evaluation["champion"]["model_version"]
    assert registry.versions() == sorted([served, challenger])
    assert evaluation["better"] is False and evaluation["promoted"] is False
    assert evaluation["reason"].startswith("AP gain")
    assert evaluation["margin"] == {"min_ap_gain": 1.0, "max_auc_loss": 0.005}
    old, new = evaluation["champion"], evaluation["challenger"]
    assert old["n"] == new["n"] > 0 and old["n_fraud"] == new["n_fraud"] > 0
    window = evaluation["window"]
    assert (window["train_days"], window["delay_days"], window["eval_days"]) == (7, 7, 7)
    assert json.loads((registry.path(challenger) / "retrain.json").read_text()) == {
        k: v for k, v in evaluation.items() if k != "challenger_version"
    }
    assert [h["action"] for h in registry.history()] == ["register", "promote", "register"]
