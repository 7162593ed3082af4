"""``fraudstream serve``'s hand-over to uvicorn, without a window where SIGTERM kills.

The command handles SIGTERM itself while it starts (:mod:`fraudstream.startup`). uvicorn
installs its own handlers only once its server runs, so a SIGTERM in between met Python's
default and killed the process (exit status -15), and uvicorn, having shut down on a
SIGTERM, sends it again to the handler it found, which was that default too. With one
process, :func:`run_api` keeps the command's handler in place, in its recording mode, until
uvicorn's takes over, then replays a SIGTERM recorded meanwhile; what uvicorn sends again
at its end is only recorded. A SIGTERM at any time then stops the API with exit code 0, as
it stops the worker. With several worker processes, uvicorn's supervisor installs handlers
that cannot replay, so the command's handler is removed first (the window stays, for the
supervisor only).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from fraudstream.startup import StartupSignals

__all__ = ["STARTUP_FAILURE", "ApiServer", "run_api"]


class ApiServer(uvicorn.Server):
    """uvicorn's server, replaying a SIGTERM ``startup`` recorded before its handlers."""

    def __init__(self, config: uvicorn.Config, startup: StartupSignals) -> None:
        super().__init__(config)
        self._startup = startup

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            self._startup.replay()
            yield


def run_api(target: Any, workers: int, startup: StartupSignals, options: dict[str, Any]) -> bool:
    """Serve ``target`` (the app; with ``workers`` > 1 its factory's import string) until
    SIGTERM or Ctrl-C, with uvicorn ``options``. With one process ``startup`` is installed
    and deferred (:meth:`~fraudstream.startup.StartupSignals.defer`), and uninstalled on
    return; with several, already uninstalled. Returns whether the server started (False: it
    could not bind, or the app's start-up failed; uvicorn logged why)."""
    if workers > 1:
        uvicorn.run(target, factory=True, workers=workers, **options)
        return True
    server = ApiServer(uvicorn.Config(target, **options), startup)
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn re-raises it at exit
            server.run()
    finally:
        startup.uninstall()
    return server.started
