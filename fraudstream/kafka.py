"""Kafka client configuration, checks and topic administration, built from settings.

One place turns :class:`~fraudstream.config.KafkaSettings` into the configuration of
each client family: :func:`confluent_config` for every confluent-kafka producer,
consumer and admin client, and :func:`faust_credentials` for Faust (aiokafka
underneath), so that the security settings (TLS, SASL) reach all of them alike.
No other module builds a Kafka client configuration.
"""

from __future__ import annotations

import logging
import re
import ssl
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from fraudstream.config import KafkaSettings, SettingsError, env_name
from fraudstream.errors import FraudstreamError

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

log = logging.getLogger(__name__)


class KafkaUnavailable(FraudstreamError):
    """The configured Kafka cluster did not answer."""


def _sasl_credentials(kafka: KafkaSettings) -> tuple[str, str]:
    """The SASL user and password, or :class:`SettingsError` naming what is missing."""
    if not kafka.sasl_username or kafka.sasl_password is None:
        raise SettingsError(
            f"{env_name('kafka', 'security_protocol')}={kafka.security_protocol} needs "
            f"{env_name('kafka', 'sasl_username')} and {env_name('kafka', 'sasl_password')}"
        )
    return kafka.sasl_username, kafka.sasl_password.get_secret_value()


def confluent_config(kafka: KafkaSettings, bootstrap: str) -> dict[str, Any]:
    """librdkafka settings common to producers, consumers and admin clients.

    Every confluent-kafka client of fraudstream starts from this (through
    :func:`producer_config`, :func:`consumer_config` or :func:`admin`).
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "security.protocol": kafka.security_protocol,
        "client.id": "fraudstream",
    }
    if kafka.uses_sasl:
        username, password = _sasl_credentials(kafka)
        conf["sasl.mechanism"] = kafka.sasl_mechanism
        conf["sasl.username"] = username
        conf["sasl.password"] = password
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


def producer_config(kafka: KafkaSettings, bootstrap: str, linger_ms: int = 5) -> dict[str, Any]:
    """An idempotent producer: retries never duplicate or reorder within a partition."""
    conf = confluent_config(kafka, bootstrap)
    conf.update({"enable.idempotence": True, "acks": "all", "linger.ms": linger_ms})
    return conf


def faust_broker_url(bootstrap: str) -> str:
    """Faust's broker URL for a bootstrap list (``kafka://h1:p1;h2:p2``)."""
    return "kafka://" + ";".join(bootstrap.split(","))


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A client TLS context: brokers verified (certificate and host name) against
    ``ssl_cafile`` or the system CAs, with the client certificate when one is set."""
    context = ssl.create_default_context(
        purpose=ssl.Purpose.SERVER_AUTH,
        cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
    )
    if kafka.ssl_certfile and kafka.ssl_keyfile:
        password = kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None
        try:
            context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile), password)
        except ssl.SSLError as exc:
            raise SettingsError(
                f"{env_name('kafka', 'ssl_certfile')}/{env_name('kafka', 'ssl_keyfile')}: "
                f"cannot load the client certificate ({exc.reason}; is "
                f"{env_name('kafka', 'ssl_key_password')} right?)"
            ) from None
    return context


def faust_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """Faust ``broker_credentials`` for the security settings, or ``None`` for PLAINTEXT."""
    import faust

    context = ssl_context(kafka) if kafka.uses_ssl else None
    if kafka.uses_sasl:
        username, password = _sasl_credentials(kafka)
        return faust.SASLCredentials(
            username=username,
            password=password,
            ssl_context=context,
            mechanism=kafka.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def admin(kafka: KafkaSettings, bootstrap: str) -> AdminClient:
    return AdminClient(confluent_config(kafka, bootstrap))


_BROKER_NAME = re.compile(r"\b[a-z_]+://\S+")  # "sasl_ssl://host:port/1:" says nothing


def _settings_to_check(detail: str, tls: bool = False) -> list[str]:
    """The settings a connection error points at (from librdkafka's error text); ``tls``:
    the client connects with TLS."""
    text = _BROKER_NAME.sub("", detail).lower()
    tls_names = ["security_protocol", "ssl_cafile", "ssl_certfile", "ssl_keyfile"]
    if "sasl" in text or "authentication" in text:
        names = ["security_protocol", "sasl_mechanism", "sasl_username", "sasl_password"]
    elif "ssl" in text or "certificate" in text or "tls" in text:
        names = tls_names
    elif "apiversion_query" in text:  # dropped before the first request: protocol mismatch,
        # or, over TLS 1.3, the broker refusing the client's certificate (the client learns
        # it only when the connection drops after its side of the handshake)
        names = tls_names if tls else ["security_protocol"]
    else:
        return []
    return [env_name("kafka", name) for name in names]


class _Lines(logging.Handler):
    """Keeps one client's librdkafka log lines: its reasons for a dropped connection."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def check_kafka(kafka: KafkaSettings, bootstrap: str, timeout_s: float = 5.0) -> int:
    """Ask the cluster for metadata; return the broker count or raise :class:`KafkaUnavailable`
    naming the settings to check (the address, or the TLS / SASL settings)."""
    conf = confluent_config(kafka, bootstrap)
    errors: list[str] = []
    seen = _Lines()
    rdkafka_log = logging.Logger("rdkafka")  # this client's own: not printed, not propagated
    rdkafka_log.addHandler(seen)
    conf.update(
        {"error_cb": lambda err: errors.append(str(err)), "logger": rdkafka_log, "log_level": 6}
    )
    client = AdminClient(conf)
    try:
        metadata = client.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        client.poll(0)  # serves error_cb and the log lines
        pointed = [line for line in errors + seen.lines if _settings_to_check(line)]
        detail = pointed[0] if pointed else (errors or [str(exc.args[0] if exc.args else exc)])[-1]
        hint = _settings_to_check(detail, tls=kafka.security_protocol in ("SSL", "SASL_SSL"))
        check = f"; check {', '.join(hint)}" if hint else ""
        raise KafkaUnavailable(
            f"{env_name('kafka', 'bootstrap_servers')}={bootstrap} "
            f"({env_name('kafka', 'security_protocol')}={kafka.security_protocol}): Kafka did "
            f"not answer within {timeout_s:g}s ({detail}){check}"
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
