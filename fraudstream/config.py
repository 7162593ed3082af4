"""The one typed settings model of fraudstream.

Every setting is declared once here, with its environment name derived from its
position: ``FRAUDSTREAM_<SECTION>__<FIELD>`` (for example
``FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS``). Values come from the environment or an
optional ``.env`` file in the working directory. Entry points call
:func:`load_settings` once and pass the result down; nothing else reads the
environment.

Unknown ``FRAUDSTREAM_*`` variables (in the environment or ``.env``; other keys of ``.env``
are left alone) and malformed values are rejected with a :class:`SettingsError` that names
the variable.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from fraudstream.errors import FraudstreamError

log = logging.getLogger(__name__)

ENV_PREFIX = "FRAUDSTREAM_"
NESTED_DELIMITER = "__"
#: Environment variable that ``feature_repo/feature_store.yaml`` expands for the
#: Redis online store. It is derived from :class:`RedisSettings` by
#: :func:`feast_environment`; it is an output of the settings, not an input.
FEAST_REDIS_ENV = "FRAUDSTREAM_FEAST_REDIS_CONNECTION"
DERIVED_ENV = frozenset({FEAST_REDIS_ENV})

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class SettingsError(FraudstreamError, ValueError):
    """A setting is unknown or invalid; the message names the variable."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*")
    @classmethod
    def _not_nan(cls, value: Any) -> Any:
        # every comparison with NaN is false: a NaN margin or limit would silently never
        # (or always) apply
        if isinstance(value, float) and math.isnan(value):
            raise ValueError("must be a number, not NaN")
        return value


class KafkaSettings(_Section):
    """Kafka connection and security. Unset ``bootstrap_servers`` means: use the local stack.

    The security settings reach every client alike (confluent-kafka and Faust), through
    :mod:`fraudstream.kafka`. SASL protocols need ``sasl_username`` and ``sasl_password``;
    a client certificate (mutual TLS) needs both ``ssl_certfile`` and ``ssl_keyfile``.
    """

    bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port...]; unset: the local stack"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: FilePath | None = Field(
        default=None, description="CA bundle (PEM) of the brokers' certificates; unset: system CAs"
    )
    ssl_certfile: FilePath | None = Field(
        default=None, description="client certificate (PEM) for mutual TLS"
    )
    ssl_keyfile: FilePath | None = Field(default=None, description="client key (PEM)")
    ssl_key_password: SecretStr | None = Field(
        default=None, description="passphrase of an encrypted ssl_keyfile"
    )
    partitions: int = Field(default=4, ge=1, le=1024, description="partitions of created topics")
    replication_factor: int = Field(default=1, ge=1, le=16)
    session_timeout_ms: int = Field(
        default=6000,
        ge=1000,
        le=300_000,
        description=(
            "consumer-group session timeout: how long a dead member holds its partitions. "
            "Also bounds how long a join waits on the local broker (about half of it)."
        ),
    )
    fetch_max_wait_ms: int = Field(
        default=10,
        ge=0,
        le=10_000,
        description=(
            "longest a consumer fetch waits for data. Kafka answers as soon as data arrives, "
            "so this only sets how often an idle consumer asks; the local broker (Tansu) "
            "waits the whole time, so it bounds latency there (Faust hard-codes 1500)"
        ),
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str | None) -> str | None:
        if value is None:
            return None
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("empty bootstrap server list")
        for server in servers:
            match = _HOST_PORT.match(server)
            if match is None or not 0 < int(match.group(2)) < 65536:
                raise ValueError(f"{server!r} is not host:port (for example 127.0.0.1:9092)")
        return ",".join(servers)

    @model_validator(mode="after")
    def _check_client_certificate(self) -> KafkaSettings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError(
                f"{env_name('kafka', 'ssl_certfile')} and {env_name('kafka', 'ssl_keyfile')} "
                "go together (mutual TLS): set both or neither"
            )
        return self

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")


class TopicSettings(_Section):
    """Topic names."""

    transactions: str = "transactions"
    decisions: str = "decisions"
    dead_letter: str = "transactions.dlq"
    labels: str = "labels"

    @field_validator("*")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value):
            raise ValueError(f"{value!r} is not a valid Kafka topic name")
        return value

    def require_distinct(self, *roles: str) -> None:
        """Raise :class:`SettingsError` naming the variables when two of ``roles``
        (``"transactions"``, ...) are one topic: the worker would read its own decisions,
        the archive its labels as transactions. (Other commands, such as a reader of one
        topic, may point several names at one topic.)"""
        names = {role: getattr(self, role) for role in roles}
        for role, name in names.items():
            same = [r for r in roles if r != role and names[r] == name]
            if same:
                raise SettingsError(
                    f"{env_name('topics', role)} and {env_name('topics', same[0])} are both "
                    f"{name!r}: they must be different topics"
                )

    def all(self) -> list[str]:
        return [self.transactions, self.decisions, self.dead_letter, self.labels]


class RedisSettings(_Section):
    """Redis (the Feast online store). Unset ``url`` means: use the local stack.

    ``username``/``password`` authenticate (an ACL user, or the default user's
    ``requirepass`` without a username); ``rediss://`` means TLS, verified against
    ``ssl_ca_certs`` (or the system CAs). They never go into the URL.
    """

    url: str | None = Field(
        default=None, description="redis://host:port/db or rediss://... for TLS; unset: local stack"
    )
    username: str | None = Field(default=None, description="ACL user")
    password: SecretStr | None = None
    ssl_ca_certs: FilePath | None = Field(
        default=None, description="CA bundle (PEM) for rediss://; unset: system CAs"
    )
    socket_timeout_s: float = Field(default=2.0, gt=0, le=60)
    retries: int = Field(
        default=1,
        ge=0,
        le=10,
        description="retries of a failed command (10 ms, then up to 100 ms apart)",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.password:  # first: the other messages show the URL
            raise ValueError("put the password in FRAUDSTREAM_REDIS__PASSWORD, not in the URL")
        if parts.username:  # redis-py would log in as this user, Feast would not
            raise ValueError("put the user in FRAUDSTREAM_REDIS__USERNAME, not in the URL")
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"{value!r} must start with redis:// or rediss://")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{value!r} has an invalid port") from exc
        if not parts.hostname or port is None:
            raise ValueError(f"{value!r} needs a host and a port (redis://host:6379/0)")
        if ":" in parts.hostname:  # Feast splits its "host:port" on ':'
            raise ValueError(
                f"{value!r}: Feast's Redis store cannot take an IPv6 address; use a host name"
            )
        if not re.fullmatch(r"/?(\d+)?", parts.path):
            raise ValueError(f"{value!r}: the database must be a number (redis://host:6379/0)")
        if parts.query or parts.fragment:  # redis-py would read them, Feast would not
            raise ValueError(
                f"{value!r} must not carry options after the database: use the "
                "FRAUDSTREAM_REDIS__ settings"
            )
        return value

    @field_validator("username", "password")
    @classmethod
    def _check_credential(cls, value: str | SecretStr | None) -> str | SecretStr | None:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text is not None and "," in text:  # never echo the value: it may be a secret
            raise ValueError(
                "must not contain ',' (Feast's Redis connection string cannot carry it)"
            )
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> RedisSettings:
        if self.ssl_ca_certs is not None and not (self.url or "").startswith("rediss://"):
            raise ValueError(
                f"{env_name('redis', 'ssl_ca_certs')} is for TLS: set "
                f"{env_name('redis', 'url')} to a rediss:// URL"
            )
        return self


class FeastSettings(_Section):
    repo_path: Path = Path("feature_repo")


class ModelSettings(_Section):
    """The model artifact, the model registry and the retrain promotion rule."""

    dir: Path = Field(
        default=Path("models/current"),
        description="model artifact directory: `train` writes here; served when no registry",
    )
    registry_dir: Path | None = Field(
        default=None,
        description="model registry (versions + registry.json); unset: <dir's parent>/registry",
    )
    poll_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="how often the worker and the API look for a promoted model (between batches)",
    )
    promote_min_ap_gain: float = Field(
        default=0.01,
        description="retrain promotes when the challenger's AP is at least this higher",
    )
    promote_max_auc_loss: float = Field(
        default=0.005,
        ge=0,
        description="... and its AUC ROC at most this lower than the champion's",
    )

    @property
    def registry_path(self) -> Path:
        return self.registry_dir if self.registry_dir is not None else self.dir.parent / "registry"


class WorkerSettings(_Section):
    """The scoring worker's metrics and liveness endpoint, and its start."""

    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="serve /metrics and /live here; off when unset"
    )
    stall_after_s: float = Field(
        default=60.0,
        gt=0,
        description="not live when a partition with lag has not committed for this long",
    )
    check_interval_s: float = Field(default=5.0, gt=0, le=600, description="liveness check period")
    warm_cache_s: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="at start, while the worker joins its consumer group, fill the terminal "
        "and customer-state caches from Redis for at most this long (0: off; they then fill "
        "as batches come); its first batch waits for the warm-up to end",
    )


class ApiSettings(_Section):
    """The REST API (``fraudstream serve``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_key: SecretStr | None = Field(default=None, description="required X-API-Key when set")
    max_batch: int = Field(
        default=100, ge=1, le=10_000, description="most transactions in one /v1/score/batch"
    )
    max_body_bytes: int = Field(
        default=262_144, ge=1024, le=64 * 1024 * 1024, description="larger bodies get 413"
    )
    warm_cache_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="at start, before it listens, fill the terminal and customer-state caches "
        "from Redis for at most this long (0: off; they then fill as requests come)",
    )
    watch_max_silence_s: float = Field(
        default=0.1,
        ge=0,
        le=60,
        description="skip the round trip that checks a call's cached rows when Redis has "
        "reported none of them changed (CLIENT TRACKING, Redis 6+), while Redis answered "
        "that watch within this many seconds (0: off, every call checks Redis)",
    )


class ScoringSettings(_Section):
    """The worker's and the API's scoring policy."""

    batch_size: int = Field(default=500, ge=1, le=10_000, description="events per micro-batch")
    batch_timeout_s: float = Field(
        default=0.01,
        gt=0,
        le=10,
        description="longest wait to fill a micro-batch (latency: a batch waits at most this "
        "long for more events; throughput: a busy worker's batches fill before it)",
    )
    degraded_max_approve_amount: float = Field(
        default=100.0,
        ge=0,
        description="while degraded, amounts above this are never approved (sent to review)",
    )
    exact_reasons: Literal["all", "flagged"] = Field(
        default="flagged",
        description="SHAP (TreeSHAP) reasons for every decision, or only for review and "
        "decline (approvals then get XGBoost's approximate contributions, 13x cheaper)",
    )
    max_event_ahead_s: float = Field(
        default=86_400.0,
        gt=0,
        description="the worker dead-letters an event timed further than this after its clock",
    )
    customer_cache_rows: int = Field(
        default=4_000_000,
        ge=0,
        description="customer-history rows kept in process (about 24 bytes each); "
        "checked against Redis on every batch",
    )


class StackSettings(_Section):
    dir: Path = Field(default=Path(".stack"), description="local stack state, data and logs")
    kafka_storage_engine: str = Field(
        default="memory://tansu/",
        pattern=r"^(memory|s3)://",
        description=(
            "the local broker's (Tansu) --storage-engine: memory://tansu/ (lost when the broker "
            "stops) or s3://BUCKET/ (kept; the S3 endpoint and keys come from AWS_ENDPOINT, "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ALLOW_HTTP)"
        ),
    )


class MonitoringSettings(_Section):
    """The archive (the offline log of what flowed), live quality and drift monitoring."""

    archive_dir: Path | None = Field(
        default=None, description="archive root; unset: <feast repo_path>/data/archive"
    )
    archive_group_id: str = Field(
        default="fraudstream-archive", description="consumer group of `fraudstream archive`"
    )
    archive_max_batch: int = Field(
        default=5000, ge=1, le=1_000_000, description="most messages per archived part file"
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="archive's /metrics (live quality); off unset"
    )
    quality_interval_s: float = Field(
        default=60.0, gt=0, description="how often the archive recomputes the quality gauges"
    )
    quality_days: int = Field(
        default=30,
        ge=1,
        le=366,
        description="event days the quality gauges cover (longer than the labels' delay)",
    )
    drift_window: int = Field(
        default=10_000, ge=100, description="events in the live drift window (sliding)"
    )
    drift_threshold: float = Field(
        default=0.2, gt=0, description="PSI at or above this flags drift (0.2: significant)"
    )


class Settings(BaseSettings):
    """All fraudstream settings. Read once, at an entry point, with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    redis: RedisSettings = RedisSettings()
    feast: FeastSettings = FeastSettings()
    model: ModelSettings = ModelSettings()
    api: ApiSettings = ApiSettings()
    scoring: ScoringSettings = ScoringSettings()
    stack: StackSettings = StackSettings()
    worker: WorkerSettings = WorkerSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def env_name(*loc: str | int) -> str:
    """The environment variable of a setting at ``loc`` (``("kafka", "partitions")``)."""
    return ENV_PREFIX + NESTED_DELIMITER.join(str(p) for p in loc).upper()


def known_env_names(model: type[BaseModel] = Settings, loc: tuple[str, ...] = ()) -> set[str]:
    """Every environment variable that names a setting."""
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.add(env_name(*loc, field_name))  # a whole section as JSON
            names |= known_env_names(annotation, (*loc, field_name))
        else:
            names.add(env_name(*loc, field_name))
    return names


def _prefixed(items: Mapping[str, str]) -> Iterator[str]:
    for key in items:
        if key.upper().startswith(ENV_PREFIX):
            yield key.upper()


def _dotenv(path: Path | None) -> dict[str, str]:
    """The entries of the ``.env`` file at ``path`` that have a value (none without a file).

    A line that reads as a ``FRAUDSTREAM_*`` setting but is not ``NAME=VALUE`` is a
    :class:`SettingsError` naming the file and line (python-dotenv would skip it with a
    warning, and the default would apply); other unreadable lines are logged and skipped, as
    the file may be another tool's too. Values are never shown: they may be secrets.
    """
    if path is None or not path.is_file():
        return {}
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    for binding in parse_stream(io.StringIO(text)):
        if not binding.error:
            continue
        line = binding.original.line
        words = binding.original.string.strip().removeprefix("export ").lstrip()
        if words.upper().startswith(ENV_PREFIX):
            raise SettingsError(f"{path}: line {line} is not NAME=VALUE")
        log.warning("%s: line %d is not NAME=VALUE; skipped", path, line)
    values = dotenv_values(stream=io.StringIO(text))
    return {key: value for key, value in values.items() if value is not None}


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> Settings:
    """Read and validate the settings once, rejecting unknown ``FRAUDSTREAM_*`` names.

    ``environ`` defaults to the process environment; ``env_file`` is read when it exists.
    """
    env = dict(os.environ if environ is None else environ)
    from_file = _dotenv(env_file)
    known = known_env_names() | DERIVED_ENV
    sources = [("environment", list(_prefixed(env))), (str(env_file), list(_prefixed(from_file)))]
    for where, keys in sources:
        unknown = sorted(k for k in keys if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            raise SettingsError(
                f"unknown setting {', '.join(unknown)} (in the {where}); "
                "`fraudstream config show` lists the sections and fields: "
                "FRAUDSTREAM_<SECTION>__<FIELD>"
            )
    values = {k: v for k, v in env.items() if k.upper() not in DERIVED_ENV}
    try:
        return _settings_from(values, from_file)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except SourceError as exc:  # a section given as JSON that is not (the value not shown)
        field = re.search(r'field "([^"]+)"', str(exc))
        name = env_name(field.group(1)) if field else "settings"
        pos = getattr(exc.__cause__, "pos", None)
        at = "" if pos is None else f" (at character {pos})"
        raise SettingsError(f"invalid settings:\n  {name}: not valid JSON{at}") from None


def _settings_from(env: Mapping[str, str], dotenv: Mapping[str, str]) -> Settings:
    # pydantic-settings reads os.environ itself; hand it exactly the mapping we checked. The
    # .env file's own FRAUDSTREAM_* entries (``dotenv``) come with it, below the environment's
    # (as pydantic-settings ranks them): the file may hold other tools' variables (AWS_*,
    # ...), which pydantic-settings would refuse as extra inputs.
    from_file = {
        key: value
        for key, value in dotenv.items()
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in DERIVED_ENV
    }
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update({**from_file, **env})
        return Settings(_env_file=None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if isinstance(p, str | int)]
        name = env_name(*loc) if loc else "settings"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets shown as ``**********``."""

    def walk(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "**********"
        if isinstance(value, BaseModel):
            return {name: walk(getattr(value, name)) for name in type(value).model_fields}
        if isinstance(value, Path):
            return str(value)
        return value

    result: dict[str, Any] = walk(settings)
    return result


def redis_url_with_auth(url: str, redis: RedisSettings) -> str:
    """``url`` with the configured ACL user and password inserted (for clients that take URLs)."""
    if redis.password is None and redis.username is None:
        return url
    parts = urlsplit(url)
    user = quote(redis.username or "", safe="")
    secret = quote(redis.password.get_secret_value(), safe="") if redis.password else ""
    netloc = f"{user}:{secret}@{parts.hostname}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def _feast_value(value: str) -> str:
    """``value`` as Feast reads it back: Feast JSON-decodes each value when it can, so a
    value that decodes (``123``, ``true``, ``"x"``) is written as a JSON string."""
    try:
        json.loads(value)
    except ValueError:
        return value
    return json.dumps(value)


def feast_connection_string(url: str, redis: RedisSettings) -> str:
    """Feast's Redis ``connection_string`` (``host:port,db=N,ssl=true,...``) for ``url``.

    It carries the password, so it goes only into the environment of Feast (a subprocess or
    this process) and never into a file or a log; ``fraudstream env`` prints it on
    purpose, for ``eval`` in the user's own shell.
    """
    parts = urlsplit(url)
    items = [f"{parts.hostname}:{parts.port}"]
    db = parts.path.lstrip("/")
    if db:
        items.append(f"db={int(db)}")
    if parts.scheme == "rediss":
        items.append("ssl=true")
        if redis.ssl_ca_certs is not None:
            items.append(f"ssl_ca_certs={_feast_value(str(redis.ssl_ca_certs))}")
    if redis.username:
        items.append(f"username={_feast_value(redis.username)}")
    if redis.password is not None:
        items.append(f"password={_feast_value(redis.password.get_secret_value())}")
    return ",".join(items)
