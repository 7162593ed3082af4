"""Crash and restart (issue 6, point 1): SIGKILL the worker at 5 random points of a
20,000-event stream, start it again each time; nothing is lost, no replay scores differently.

The harness is the chaos benchmark's (``benchmarks/chaos.py``, 100,000 events there): every
valid transaction has at least one decision, every repeated decision of a transaction has the
first one's score and action, and every malformed message is on the dead-letter topic.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.chaos import World, run_chaos

pytestmark = pytest.mark.e2e

N_EVENTS = 20_000
N_MALFORMED = 20
KILLS = 5


def test_sigkill_five_times_loses_nothing(
    chaos_world: World, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    result = run_chaos(
        chaos_world,
        bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        work=tmp_path,
        n_events=N_EVENTS,
        n_malformed=N_MALFORMED,
        kills=KILLS,
        seed=6,
        timeout_s=420.0,
    )
    print(result.summary(), result.as_dict())
    detail = f"{result.as_dict()}\n{result.examples}"
    assert len(result.kills) == KILLS
    assert result.complete, detail
    assert result.lost == 0, detail
    assert result.conflicting == 0, detail
    assert result.malformed_missing == 0, detail
    assert result.unexpected_dlq == 0, detail
    assert result.dlq >= N_MALFORMED
    # every restarted worker decided again (a kill is SIGKILL: no clean exit, no commit)
    assert all(k.recovery_s is not None for k in result.kills), detail
    assert result.final_exit_code == 0, detail
