"""SIGTERM during start-up: a clean stop before the worker consumes, a replay after."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from fraudstream.config import Settings
from fraudstream.startup import StartupSignals, StoppedBeforeStart
from streaming.app import create_app
from streaming.worker import Worker

pytestmark = pytest.mark.unit


@pytest.fixture
def startup() -> Iterator[StartupSignals]:
    before = signal.getsignal(signal.SIGTERM)
    signals = StartupSignals()
    signals.install()
    yield signals
    signals.uninstall()
    signal.signal(signal.SIGTERM, before)


def test_sigterm_while_starting_raises_stopped_before_start(startup: StartupSignals) -> None:
    with pytest.raises(StoppedBeforeStart):
        signal.raise_signal(signal.SIGTERM)
    assert startup.received is signal.SIGTERM
    signal.raise_signal(signal.SIGTERM)  # a second one, while the first unwinds: ignored


def test_a_sigterm_whose_exception_python_swallowed_stops_the_start_at_hand_over() -> None:
    """The handler ran inside a weakref callback (as inside the import machinery's module
    locks): Python does not propagate the exception it raised there."""

    class Thing:
        pass

    startup = StartupSignals()

    def callback(_: object) -> None:
        signal.raise_signal(signal.SIGTERM)  # the handler runs here, before the next line
        raise AssertionError("not reached: the handler raised")

    before, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    unraised: list[Any] = []
    sys.unraisablehook = unraised.append  # the hook the command found (Python's prints)
    try:
        startup.install()
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing  # the callback runs; its StoppedBeforeStart goes to sys.unraisablehook
        assert ref() is None
        assert startup.received is signal.SIGTERM  # recorded, and the start-up went on
        with pytest.raises(StoppedBeforeStart):
            startup.defer()  # where the command hands over: it stops there instead
        assert unraised == []  # nothing printed of it
    finally:
        startup.uninstall()
        signal.signal(signal.SIGTERM, before)
        sys.unraisablehook = hook


def test_the_unraisable_hook_is_back_once_the_start_up_is_over() -> None:
    before = signal.getsignal(signal.SIGTERM)
    hook = sys.unraisablehook
    try:
        for end in ("defer", "uninstall"):
            signals = StartupSignals()
            signals.install()
            assert sys.unraisablehook != hook  # ours, while the start-up may be interrupted
            getattr(signals, end)()
            assert sys.unraisablehook == hook
    finally:
        signal.signal(signal.SIGTERM, before)
        sys.unraisablehook = hook


def test_stopped_before_start_is_not_an_exception() -> None:
    # no `except Exception` between the handler and the command swallows it
    assert not issubclass(StoppedBeforeStart, Exception)


def test_uninstall_restores_the_previous_handler() -> None:
    def previous(signum: int, frame: FrameType | None) -> None:
        raise AssertionError("not called")

    before = signal.signal(signal.SIGTERM, previous)
    try:
        signals = StartupSignals()
        signals.install()
        assert signal.getsignal(signal.SIGTERM) != previous
        signals.uninstall()
        assert signal.getsignal(signal.SIGTERM) == previous
    finally:
        signal.signal(signal.SIGTERM, before)


def test_deferred_sigterm_is_recorded_then_replayed_to_the_new_handler(
    startup: StartupSignals,
) -> None:
    startup.replay()  # nothing recorded yet: nothing sent
    startup.defer()
    signal.raise_signal(signal.SIGTERM)  # recorded, not raised
    assert startup.received is signal.SIGTERM
    seen: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))  # the framework's
    startup.replay()
    assert seen == [signal.SIGTERM]


def test_replay_sends_nothing_when_no_sigterm_came(startup: StartupSignals) -> None:
    startup.defer()
    seen: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    startup.replay()
    assert seen == []


@pytest.mark.parametrize("came", [True, False])
def test_worker_stops_on_a_sigterm_from_start_up_once_its_handlers_are_in(
    startup: StartupSignals, came: bool
) -> None:
    app = create_app(Settings(), "127.0.0.1:9", app_id="startup-signal-test")
    worker = Worker(app, startup=startup, quiet=True, loglevel="WARNING", redirect_stdouts=False)
    startup.defer()
    if came:
        signal.raise_signal(signal.SIGTERM)
    loop = worker.loop
    try:
        worker.install_signal_handlers()  # Faust's (mode's) handlers, then the replay
        loop.run_until_complete(asyncio.sleep(0.2))  # the signal reaches the loop's handler
        # mode's SIGTERM handler schedules the worker's stop and records when
        assert (worker._signal_stop_time is not None) is came
        if worker._signal_stop_future is not None:
            loop.run_until_complete(worker._signal_stop_future)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
            loop.remove_signal_handler(sig)


async def _lifespan_only(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that only starts and stops (uvicorn needs one to serve)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})


@pytest.mark.parametrize("came", [True, False])
def test_api_server_replays_a_sigterm_from_start_up_and_outlives_its_re_raise(
    startup: StartupSignals, came: bool
) -> None:
    import uvicorn

    from fraudstream.stack import free_port
    from serving.server import ApiServer

    startup.defer()
    if came:  # between the command's start-up and uvicorn's handlers
        signal.raise_signal(signal.SIGTERM)
    config = uvicorn.Config(_lifespan_only, host="127.0.0.1", port=free_port(), log_config=None)
    server = ApiServer(config, startup)
    timed_out = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 20.0
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        if not came and server.started:  # a SIGTERM once it serves (its handler is in)
            signal.raise_signal(signal.SIGTERM)  # handled in the main thread
        while not server.should_exit and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.should_exit:  # no signal stopped it: stop it, and fail below
            timed_out.set()
            server.should_exit = True

    threading.Thread(target=watch, daemon=True).start()
    server.run()  # returns once the SIGTERM, replayed or sent, stopped it; the process lives
    assert not timed_out.is_set() and server.started
    # uvicorn put the start-up handler back and sent it the signal again: only recorded
    assert signal.getsignal(signal.SIGTERM) == startup._handle
    assert startup.received is signal.SIGTERM


def lifespan_only_app() -> Any:
    """The factory each API process of the supervisor test calls (an import string)."""
    return _lifespan_only


def test_api_supervisor_replays_a_sigterm_from_start_up(startup: StartupSignals) -> None:
    """``serve --workers N``: a SIGTERM between the command's start-up and the supervisor's
    handlers stops the supervisor (it was lost to the default handler before: a kill)."""
    import uvicorn
    from uvicorn.supervisors.multiprocess import SIGNALS

    from fraudstream.stack import free_port
    from serving.server import ApiSupervisor

    handlers = {sig: signal.getsignal(sig) for sig in SIGNALS}
    startup.defer()
    signal.raise_signal(signal.SIGTERM)  # recorded
    config = uvicorn.Config(
        f"{__name__}:lifespan_only_app",
        factory=True,
        workers=2,
        host="127.0.0.1",
        port=free_port(),
        log_config=None,
    )
    timed_out = threading.Event()
    try:
        with config.bind_socket() as sock:
            supervisor = ApiSupervisor(config, [sock], startup)

            def watch() -> None:
                if not supervisor.should_exit.wait(20.0):  # no signal stopped it
                    timed_out.set()
                    supervisor.should_exit.set()

            threading.Thread(target=watch, daemon=True).start()
            supervisor.run()  # returns once the replayed SIGTERM stopped it
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert not timed_out.is_set()
    assert all(process.exitcode is not None for process in supervisor.processes)
