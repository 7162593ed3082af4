"""The demo waits for *this* worker's Ready line, not one an earlier run left in the log."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from fraudstream.demo import wait_until_ready
from fraudstream.errors import FraudstreamError
from fraudstream.stack import ProcessInfo

pytestmark = pytest.mark.unit


def test_an_earlier_runs_ready_line_does_not_count(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_bytes(b"[2026-11-21 10:00:00] [1] [INFO] [^Worker]: Ready \n")
    offset = log.stat().st_size
    me = ProcessInfo(pid=os.getpid(), program=sys.executable)
    with pytest.raises(FraudstreamError, match="not ready"):
        wait_until_ready(log, me, timeout_s=0.5, offset=offset)

    def later() -> None:
        time.sleep(0.4)
        with log.open("ab") as out:
            out.write(b"[2026-11-21 10:05:00] [2] [INFO] [^Worker]: Ready \n")

    writer = threading.Thread(target=later)
    started = time.monotonic()
    writer.start()
    wait_until_ready(log, me, timeout_s=10, offset=offset)
    writer.join()
    assert time.monotonic() - started >= 0.35
