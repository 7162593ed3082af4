"""Kafka client configuration, checks and topic administration, built from settings.

One place turns :class:`~fraudstream.config.KafkaSettings` into the configuration of
each client family: confluent-kafka (producers, consumers, admin) and Faust
(aiokafka underneath), so that security settings reach all of them alike.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from fraudstream.config import KafkaSettings, env_name
from fraudstream.errors import FraudstreamError

log = logging.getLogger(__name__)


class KafkaUnavailable(FraudstreamError):
    """The configured Kafka cluster did not answer."""


def confluent_config(kafka: KafkaSettings, bootstrap: str) -> dict[str, Any]:
    """librdkafka settings common to producers, consumers and admin clients."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "security.protocol": kafka.security_protocol,
        "client.id": "fraudstream",
    }
    if kafka.uses_sasl:
        conf["sasl.mechanism"] = kafka.sasl_mechanism
        conf["sasl.username"] = kafka.sasl_username or ""
        if kafka.sasl_password is not None:
            conf["sasl.password"] = kafka.sasl_password.get_secret_value()
    if kafka.uses_ssl:
        if kafka.ssl_cafile:
            conf["ssl.ca.location"] = str(kafka.ssl_cafile)
        if kafka.ssl_certfile:
            conf["ssl.certificate.location"] = str(kafka.ssl_certfile)
        if kafka.ssl_keyfile:
            conf["ssl.key.location"] = str(kafka.ssl_keyfile)
        if kafka.ssl_key_password is not None:
            conf["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    return conf


def consumer_config(kafka: KafkaSettings, bootstrap: str, group_id: str) -> dict[str, Any]:
    """A consumer that commits explicitly and joins fast on the local broker."""
    conf = confluent_config(kafka, bootstrap)
    conf.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": kafka.session_timeout_ms,
            "heartbeat.interval.ms": max(100, kafka.session_timeout_ms // 3),
            "max.poll.interval.ms": max(kafka.session_timeout_ms, 300_000),
        }
    )
    return conf


def producer_config(kafka: KafkaSettings, bootstrap: str) -> dict[str, Any]:
    """An idempotent producer: retries never duplicate or reorder within a partition."""
    conf = confluent_config(kafka, bootstrap)
    conf.update({"enable.idempotence": True, "acks": "all", "linger.ms": 5})
    return conf


def faust_broker_url(bootstrap: str) -> str:
    """Faust's broker URL for a bootstrap list (``kafka://h1:p1;h2:p2``)."""
    return "kafka://" + ";".join(bootstrap.split(","))


def faust_credentials(kafka: KafkaSettings) -> Any:
    """Faust ``broker_credentials`` for the security settings, or ``None`` for PLAINTEXT."""
    import faust

    context: ssl.SSLContext | None = None
    if kafka.uses_ssl:
        context = ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH,
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
        )
        if kafka.ssl_certfile and kafka.ssl_keyfile:
            context.load_cert_chain(
                str(kafka.ssl_certfile),
                str(kafka.ssl_keyfile),
                password=kafka.ssl_key_password.get_secret_value()
                if kafka.ssl_key_password
                else None,
            )
    if kafka.uses_sasl:
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=password,
            ssl_context=context,
            mechanism=kafka.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def admin(kafka: KafkaSettings, bootstrap: str) -> AdminClient:
    return AdminClient(confluent_config(kafka, bootstrap))


def check_kafka(kafka: KafkaSettings, bootstrap: str, timeout_s: float = 5.0) -> int:
    """Ask the cluster for metadata; return the broker count or raise :class:`KafkaUnavailable`."""
    conf = confluent_config(kafka, bootstrap)
    errors: list[str] = []
    conf["error_cb"] = lambda err: errors.append(str(err))
    conf["log_level"] = 0  # a refused connection is the answer here, not noise on stderr
    try:
        metadata = AdminClient(conf).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        detail = errors[-1] if errors else str(exc.args[0] if exc.args else exc)
        raise KafkaUnavailable(
            f"{env_name('kafka', 'bootstrap_servers')}={bootstrap}: Kafka did not answer "
            f"within {timeout_s:g}s ({detail})"
        ) from None
    return len(metadata.brokers)


def ensure_topics(
    kafka: KafkaSettings, bootstrap: str, names: list[str], partitions: int | None = None
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    client = admin(kafka, bootstrap)
    existing = set(client.list_topics(timeout=10).topics)
    wanted = [
        NewTopic(name, partitions or kafka.partitions, kafka.replication_factor)
        for name in names
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in client.create_topics(wanted, operation_timeout=10).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    log.info("created topics %s", created)
    return created
