"""SIGTERM while a long-running command starts: a clean stop, not a kill.

Python's default for SIGTERM ends the process on the spot (exit status -15, nothing logged).
The worker spends its first seconds importing Faust, Feast and XGBoost, checking Kafka and
Redis, creating topics and loading the model (4-5 s of imports alone on a 2-core machine)
before Faust installs its own handlers. An orchestrator that stops it in that time (a
rolling restart, ``fraudstream stack down``, a test) saw it killed, not stopped.

Nothing is consumed before the worker has started, so stopping then loses nothing.
:class:`StartupSignals` turns a SIGTERM into :class:`StoppedBeforeStart`, raised in the main
thread, which the command catches to exit 0. Once the command hands over to a framework that
installs its own handler (Faust), :meth:`StartupSignals.defer` only records a SIGTERM, and
:meth:`StartupSignals.replay` sends it again once that handler is in place.

Python runs a signal handler in whatever the main thread is executing. When that is a
weakref callback or a finaliser (the import machinery's module locks have one), the
exception the handler raises is not propagated: Python prints it as "Exception ignored in"
with a traceback and carries on, and the start-up went on to hand over to Faust, which then
stopped at the replay (a CI run of 2026-12-05 showed it). :meth:`StartupSignals.defer` raises
:class:`StoppedBeforeStart` for such a lost SIGTERM, and :func:`sys.unraisablehook` is kept
from printing it while the handler is installed.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


class StoppedBeforeStart(BaseException):
    """SIGTERM came while the command was starting.

    A ``BaseException``, as ``KeyboardInterrupt`` is: no ``except Exception`` on the way up
    swallows it.
    """


class StartupSignals:
    """SIGTERM during start-up, in two phases.

    After :meth:`install`, SIGTERM raises :class:`StoppedBeforeStart` in the main thread (a
    second SIGTERM while that unwinds is ignored). After :meth:`defer`, SIGTERM is only
    recorded, for :meth:`replay`. :meth:`uninstall` restores the previous handler.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._deferred = False
        self._previous: signal.Handlers | object | None = None
        self._previous_hook: Any = None

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable

    def defer(self) -> None:
        """From now on, only record a SIGTERM (a framework is about to install its handler).

        Raises :class:`StoppedBeforeStart` if a SIGTERM came before and Python swallowed the
        exception (raised inside a weakref callback or a finaliser)."""
        self._restore_hook()
        if self.received is not None and not self._deferred:
            raise StoppedBeforeStart(self.received)
        self._deferred = True

    def replay(self) -> None:
        """Send a SIGTERM recorded since :meth:`defer` again, to whatever handles it now."""
        if self._deferred and self.received is not None:
            log.info("SIGTERM came during start-up; stopping now")
            signal.raise_signal(self.received)

    def uninstall(self) -> None:
        """Restore the handler found by :meth:`install` (if ours is still the one in place)."""
        self._restore_hook()
        if self._previous is not None and signal.getsignal(signal.SIGTERM) == self._handle:
            signal.signal(signal.SIGTERM, self._previous)  # type: ignore[arg-type]
        self._previous = None

    def _unraisable(self, unraisable: Any) -> None:
        """Python's hook for exceptions it cannot raise: ours is only recorded (above)."""
        if isinstance(unraisable.exc_value, StoppedBeforeStart):
            log.info("SIGTERM during start-up came inside a callback; stopping at hand-over")
            return
        hook = self._previous_hook or sys.__unraisablehook__
        hook(unraisable)

    def _restore_hook(self) -> None:
        if self._previous_hook is not None and sys.unraisablehook == self._unraisable:
            sys.unraisablehook = self._previous_hook
        self._previous_hook = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        self.received = signal.Signals(signum)
        if first and not self._deferred:
            raise StoppedBeforeStart(self.received)
