"""``fraudstream serve``'s hand-over to uvicorn, without a window where SIGTERM kills.

The command handles SIGTERM itself while it starts (:mod:`fraudstream.startup`). uvicorn
installs its own handlers only once its server runs, so a SIGTERM in between met Python's
default and killed the process (exit status -15), and uvicorn, having shut down on a
SIGTERM, sends it again to the handler it found, which was that default too.
:func:`run_api` keeps the command's handler in place, in its recording mode, until uvicorn's
takes over, then replays a SIGTERM recorded meanwhile: with one process to the server's
handler (:class:`ApiServer`; what uvicorn sends again at its end is only recorded), with
several to the supervisor's (:class:`ApiSupervisor`, whose handlers queue signals for its
loop). A SIGTERM at any time then stops the API with exit code 0, as it stops the worker.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from fraudstream.startup import StartupSignals

__all__ = ["STARTUP_FAILURE", "ApiServer", "ApiSupervisor", "run_api"]


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


class ApiSupervisor(Multiprocess):
    """uvicorn's supervisor of several API processes (what ``uvicorn.run`` runs with
    ``workers`` > 1), replaying a SIGTERM ``startup`` recorded before its handlers: they are
    installed as it is built, and queue each signal for its loop (uvicorn 0.51 and later)."""

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], startup: StartupSignals
    ) -> None:
        super().__init__(config, sockets)
        startup.replay()


def run_api(target: Any, workers: int, startup: StartupSignals, options: dict[str, Any]) -> bool:
    """Serve ``target`` (the app; with ``workers`` > 1 its factory's import string) until
    SIGTERM or Ctrl-C, with uvicorn ``options``. ``startup`` is installed and deferred
    (:meth:`~fraudstream.startup.StartupSignals.defer`), and uninstalled on return. Returns
    whether the server started (False: it could not bind, or the app's start-up failed;
    uvicorn logged why; with several processes uvicorn exits on a failed bind)."""
    try:
        if workers > 1:
            config = uvicorn.Config(target, factory=True, workers=workers, **options)
            with (
                contextlib.closing(config.bind_socket()) as sock,
                contextlib.suppress(KeyboardInterrupt),
            ):
                ApiSupervisor(config, [sock], startup).run()
            return True
        server = ApiServer(uvicorn.Config(target, **options), startup)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn re-raises it at exit
            server.run()
        return server.started
    finally:
        startup.uninstall()
