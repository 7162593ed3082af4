"""``fraudstream stack up`` on a stack that is partly gone: a failed start stops only what it
started (a running broker keeps its topics), and a process registered on the stack that still
runs (a worker) stays recorded, so that ``stack down`` stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fraudstream import stack
from fraudstream.config import Settings

pytestmark = pytest.mark.integration


def _gone(info: stack.ProcessInfo) -> bool:
    deadline = time.monotonic() + 10
    while stack.process_running(info) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not stack.process_running(info)


def test_a_failed_start_stops_only_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(stack={"dir": tmp_path / "stack"})
    try:
        stack.up(settings)
        state = stack.read_state(settings)
        assert state is not None
        kafka, redis_info = state.processes["kafka"], state.processes["redis"]
        os.kill(redis_info.pid, signal.SIGKILL)
        assert _gone(redis_info)
        broken = tmp_path / "bin"
        broken.mkdir()
        (broken / "redis-server").write_text(
            "#!/bin/sh\necho 'Address already in use' >&2\nexit 1\n"
        )
        (broken / "redis-server").chmod(0o755)
        monkeypatch.setenv("PATH", f"{broken}:{os.environ['PATH']}")
        with pytest.raises(stack.StackError, match="redis"):
            stack.up(settings)
        assert stack.process_running(kafka)  # the broker (and its topics) is left running
        after = stack.read_state(settings)
        assert after is not None and after.processes["kafka"].pid == kafka.pid
        assert after.kafka_bootstrap == state.kafka_bootstrap
        monkeypatch.undo()
        messages = stack.up(settings)  # and a later start completes the stack around it
        assert any(m.startswith("kafka: already running") for m in messages)
        assert any(m.startswith("redis: started") for m in messages)
    finally:
        stack.down(settings)


def test_a_registered_process_outlives_a_stale_stack_and_is_stopped_by_down(
    tmp_path: Path,
) -> None:
    settings = Settings(stack={"dir": tmp_path / "stack"})
    worker = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        stack.up(settings)
        state = stack.read_state(settings)
        assert state is not None
        info = stack.ProcessInfo(pid=worker.pid, program=os.readlink(f"/proc/{worker.pid}/exe"))
        stack.register_process(settings, "worker", info)
        for name in ("kafka", "redis"):
            os.kill(state.processes[name].pid, signal.SIGKILL)
            assert _gone(state.processes[name])
        stack.up(settings)  # the services are started again; the worker stays recorded
        again = stack.read_state(settings)
        assert again is not None and again.processes["worker"].pid == worker.pid
        assert "worker" in stack.down(settings)
        assert worker.wait(timeout=10) is not None
    finally:
        stack.down(settings)
        if worker.poll() is None:
            worker.kill()
