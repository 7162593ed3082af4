"""The Faust application, built from :class:`~fraudstream.config.Settings`.

:func:`create_app` is the one place that turns settings into a :class:`faust.App`.
Its consumer-group timeouts derive from ``settings.kafka.session_timeout_ms``
because they decide how long a worker takes to start (measured in
``benchmarks/RESULTS.md``, "Faust worker start-to-ready"):

* the local broker (Tansu) holds a JoinGroup for about half the session timeout,
  so Faust's default of 60 s costs about 30 s on every start (6 s: 3 s);
* after a crash, the dead member keeps the group until its session expires and the
  new worker joins twice: about 13 s with a 6 s session, 110 s with Faust's 60 s.

``faust -A streaming.app worker`` finds the module attribute ``app``; it is built
lazily on first access (reading the settings once, at that point), never at import,
and is the scoring worker of :mod:`streaming.worker` (``fraudstream worker`` runs the
same app with start-up checks and clear errors).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver

from fraudstream.config import Settings
from fraudstream.kafka import faust_broker_url, faust_credentials

log = logging.getLogger(__name__)

#: Faust's own defaults for the settings :func:`create_app` tunes (faust-streaming
#: 0.15), for comparisons: ``create_app(settings, bootstrap, **FAUST_DEFAULTS)``.
FAUST_DEFAULTS: dict[str, Any] = {
    "broker_session_timeout": 60.0,
    "broker_heartbeat_interval": 3.0,
    "broker_rebalance_timeout": 60.0,
}


def group_timeouts(session_timeout_ms: int) -> dict[str, float]:
    """Faust consumer-group settings (seconds) for a session timeout in milliseconds.

    Heartbeats go three times per session (the Kafka rule of thumb). The rebalance
    timeout (how long live members may take to finish revoking and rejoin) stays at
    Faust's 60 s or more: it does not delay start-up, a dead member is dropped when
    its session expires (measured: 6 s and 60 s start equally fast), and a short one
    would evict a worker that is still finishing its in-flight events.
    """
    session = session_timeout_ms / 1000.0
    return {
        "broker_session_timeout": session,
        "broker_heartbeat_interval": max(0.1, session / 3.0),
        "broker_rebalance_timeout": max(session, FAUST_DEFAULTS["broker_rebalance_timeout"]),
    }


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread with the fetch wait of :class:`App` (Faust hard-codes 1500 ms)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = cast(App, self.app).fetch_max_wait_ms  # read by start()
        return consumer


class _Consumer(aiokafka_driver.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(aiokafka_driver.Transport):
    Consumer = _Consumer


class App(faust.App):
    """A Faust app whose worker consumer takes ``fetch_max_wait_ms`` from the settings.

    On the local broker (Tansu) a fetch with no data waits its whole maximum wait even when
    data arrives (measured: p50 event-to-consumer latency 379 ms with Faust's 1,500 ms,
    141 ms with 500 ms, 6 ms with 20 ms; ``benchmarks/RESULTS.md``); on Kafka the value only
    sets how often an idle consumer asks.
    """

    fetch_max_wait_ms: int = 1500

    def _new_transport(self) -> Any:
        url = self.conf.broker_consumer[0]
        if url.scheme in ("kafka", "aiokafka"):
            return _Transport(self.conf.broker_consumer, self)
        return super()._new_transport()


def create_app(
    settings: Settings, bootstrap: str, *, app_id: str = "fraudstream", **overrides: Any
) -> faust.App:
    """Build the Faust app for ``bootstrap`` from ``settings``; ``overrides`` win.

    ``app_id`` is also the consumer-group id and the prefix of Faust's internal
    topics. Faust does not read the environment here (``env={}``): every value
    comes from ``settings`` or ``overrides``.
    """
    kafka = settings.kafka
    options: dict[str, Any] = {
        "broker": faust_broker_url(bootstrap),
        "broker_credentials": faust_credentials(kafka),
        "env": {},
        "autodiscover": False,
        "web_enabled": False,
        "store": "memory://",
        "topic_partitions": kafka.partitions,
        "topic_replication_factor": kafka.replication_factor,
        "producer_acks": -1,
        "consumer_auto_offset_reset": "earliest",
        "stream_recovery_delay": 0.0,
        **group_timeouts(kafka.session_timeout_ms),
    }
    options.update(overrides)
    log.debug(
        "faust app %s: broker %s, session %.1fs",
        app_id,
        options["broker"],
        options["broker_session_timeout"],
    )
    app = App(app_id, **options)
    app.fetch_max_wait_ms = kafka.fetch_max_wait_ms
    return app


@functools.cache
def _default_app() -> faust.App:
    """The app of ``faust -A streaming.app worker``: settings read once, here.

    It is the scoring worker (:func:`streaming.worker.build_worker_app`, the same
    consumer group as ``fraudstream worker``): topics ensured, scorer built, agent defined.
    """
    from fraudstream.config import load_settings
    from fraudstream.stack import resolve_endpoints
    from streaming.worker import build_worker_app

    settings = load_settings()
    endpoints = resolve_endpoints(settings)
    return build_worker_app(settings, endpoints)


def __getattr__(name: str) -> Any:
    """Build the module-level ``app`` lazily (PEP 562), so importing reads no settings."""
    if name == "app":
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
