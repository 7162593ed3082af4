"""``fraudstream models list|promote|rollback|shadow`` on a registry in a temporary directory."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fraudstream.cli import app
from fraudstream.config import Settings
from fraudstream.registry import ModelRegistry

from .test_registry import make_artifact, tamper

pytestmark = pytest.mark.unit


def test_models_commands(
    clean_env: Callable[[], Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUDSTREAM_MODEL__REGISTRY_DIR", str(tmp_path / "reg"))
    registry = ModelRegistry(tmp_path / "reg")
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["models", *args])
        assert result.exit_code == code, result.output
        return result.output

    assert "no model registered" in run("list")
    for version in ("v1", "v2"):
        registry.register(make_artifact(tmp_path, version))
    table = run("list").splitlines()
    assert table[0].split() == ["version", "role", "created_at", "auc_roc", "average_precision"]
    assert table[1].split()[:2] == ["v1", "champion"] and table[2].split()[0] == "v2"

    assert "champion: v2 (was v1)" in run("promote", "v2")
    assert "rolled back from v2" in run("rollback")
    assert "no previous champion" in run("rollback", code=2)
    assert "unknown model version" in run("promote", "v9", code=2)
    assert "shadow: v2" in run("shadow", "v2")
    listed = json.loads(run("list", "--json"))
    assert (listed["champion"], listed["shadow"]) == ("v1", "v2")
    assert [h["action"] for h in listed["history"]][-3:] == ["promote", "rollback", "shadow"]
    assert "give a VERSION or --off" in run("shadow", code=2)
    assert "shadow: off" in run("shadow", "--off")
    tamper(registry.path("v2"))
    assert "SHA-256" in run("promote", "v2", code=2)
    assert registry.champion() == "v1"


def _fails_naming(args: list[str], path: Path, words: str) -> None:
    result = CliRunner().invoke(app, ["models", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {path}: ") and words in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args", [["list"], ["list", "--json"], ["rollback"], ["promote", "v1"], ["shadow", "--off"]]
)
def test_models_commands_name_a_registry_json_of_the_wrong_shape(
    clean_env: Callable[[], Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
) -> None:
    monkeypatch.setenv("FRAUDSTREAM_MODEL__REGISTRY_DIR", str(tmp_path / "reg"))
    registry = ModelRegistry(tmp_path / "reg")
    registry.register(make_artifact(tmp_path, "v1"))
    registry.file.write_text("{}")
    _fails_naming(args, registry.file, "lineage: Field required")


@pytest.mark.parametrize("args", [["list"], ["promote", "v2"]])
def test_models_commands_name_a_manifest_that_is_not_json(
    clean_env: Callable[[], Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
) -> None:
    monkeypatch.setenv("FRAUDSTREAM_MODEL__REGISTRY_DIR", str(tmp_path / "reg"))
    registry = ModelRegistry(tmp_path / "reg")
    for version in ("v1", "v2"):
        registry.register(make_artifact(tmp_path, version))
    manifest = registry.path("v2") / "manifest.json"
    manifest.write_text("{bad")
    _fails_naming(args, manifest, "not valid JSON")
