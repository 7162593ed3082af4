"""The local stack through its CLI: real processes, real PING and metadata requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from fraudstream.stack import LOCAL_BROKER_HISTORY_HINT, ProcessInfo, free_port, process_running

pytestmark = pytest.mark.integration


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    return subprocess.run(
        [sys.executable, "-m", "fraudstream", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def status(cwd: Path) -> dict:
    result = run(["stack", "status", "--json"], cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_up_twice_status_down(tmp_path: Path) -> None:
    start = time.monotonic()
    first = run(["stack", "up"], tmp_path)
    took = time.monotonic() - start
    try:
        assert first.returncode == 0, first.stderr
        assert took <= 10, f"stack up took {took:.1f}s"
        info = status(tmp_path)
        assert info["running"] is True
        assert redis.Redis.from_url(info["redis_url"]).ping()
        topics = (
            AdminClient({"bootstrap.servers": info["kafka_bootstrap"]})
            .list_topics(timeout=5)
            .topics
        )
        assert {"transactions", "decisions", "transactions.dlq", "labels"} <= set(topics)
        assert all(
            topics[t].partitions and len(topics[t].partitions) == 4 for t in ["transactions"]
        )

        second = run(["stack", "up"], tmp_path)
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stdout
        for line in LOCAL_BROKER_HISTORY_HINT:  # its latency depends on the topics' history
            assert line in second.stdout
        again = status(tmp_path)
        assert {n: p["pid"] for n, p in again["processes"].items()} == {
            n: p["pid"] for n, p in info["processes"].items()
        }
        check = run(["check"], tmp_path)
        assert check.returncode == 0, check.stderr
    finally:
        down = run(["stack", "down"], tmp_path)
    assert down.returncode == 0, down.stderr
    for name, proc in info["processes"].items():
        program = "/proc/{}/exe".format(proc["pid"])
        ours = ProcessInfo(
            pid=proc["pid"], program=os.readlink(program) if os.path.exists(program) else "/gone"
        )
        assert not process_running(ours), f"{name} still runs after stack down"
    assert status(tmp_path)["running"] is False
    assert run(["stack", "down"], tmp_path).stdout.strip() == "nothing was running"


def test_external_services_start_nothing(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    env = {
        "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FRAUDSTREAM_REDIS__URL": redis_url,
    }
    result = run(["stack", "up"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert "kafka: external" in result.stdout and "redis: external" in result.stdout
    assert not (tmp_path / ".stack" / "state.json").exists() or status(tmp_path)["processes"] == {}
    assert run(["check"], tmp_path, env).returncode == 0


def test_unreachable_redis_is_named(tmp_path: Path, kafka_bootstrap: str) -> None:
    env = {
        "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FRAUDSTREAM_REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    result = run(["check"], tmp_path, env)
    assert result.returncode == 2
    assert "FRAUDSTREAM_REDIS__URL" in result.stderr and "did not answer" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_kafka_is_named(tmp_path: Path, redis_url: str) -> None:
    env = {
        "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "FRAUDSTREAM_REDIS__URL": redis_url,
    }
    result = run(["check"], tmp_path, env)
    assert result.returncode == 2
    assert "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_stack_no_settings_says_what_to_do(tmp_path: Path) -> None:
    result = run(["check"], tmp_path)
    assert result.returncode == 2
    assert "fraudstream stack up" in result.stderr
