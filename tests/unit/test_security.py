"""Security settings reach every client, and secrets are never shown.

* Kafka: the confluent-kafka configuration (producers, consumers, admin) and Faust's
  credentials (aiokafka underneath) for PLAINTEXT, SSL, SASL_PLAINTEXT and
  SASL_SSL/SCRAM-SHA-512, built by the one module :mod:`fraudstream.kafka`.
* Redis: the product's client and Feast's connection string carry the ACL user, the
  password and TLS; the password never goes into a URL.
* Secrets: every ``SecretStr`` setting set to a recognisable value never appears in
  ``config show``, ``check``, the logs (DEBUG) or a ``repr``; ``fraudstream env`` prints
  the Redis password only inside the Feast connection it exists to export.

The real handshakes are in ``tests/integration/test_security_kafka.py`` and
``tests/integration/test_security_redis.py``.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import faust
import pytest
import redis
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from feast.infra.online_stores.redis import RedisOnlineStore
from pydantic import SecretStr

from fraudstream import stack
from fraudstream.config import (
    KafkaSettings,
    RedisSettings,
    Settings,
    SettingsError,
    feast_connection_string,
    load_settings,
)
from fraudstream.kafka import (
    confluent_config,
    consumer_config,
    faust_credentials,
    producer_config,
    ssl_context,
)
from streaming.app import create_app
from tests.security_support import Pki, make_pki, secret_env_names

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = "k1:9093,k2:9093"


#: A recognisable value per secret setting.
SECRETS = {name: f"S3CRET-{name.rsplit('__', 1)[-1].lower()}-9f2c" for name in secret_env_names()}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(
        tmp_path_factory.mktemp("pki"), key_password=SECRETS["FRAUDSTREAM_KAFKA__SSL_KEY_PASSWORD"]
    )


def kafka_settings(protocol: str, pki: Pki | None = None) -> KafkaSettings:
    values: dict[str, Any] = {"bootstrap_servers": BOOTSTRAP, "security_protocol": protocol}
    if protocol.startswith("SASL"):
        values |= {
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "fraudstream",
            "sasl_password": SECRETS["FRAUDSTREAM_KAFKA__SASL_PASSWORD"],
        }
    if pki is not None:
        values |= {
            "ssl_cafile": pki.ca,
            "ssl_certfile": pki.client_cert,
            "ssl_keyfile": pki.client_key,
            "ssl_key_password": pki.key_password,
        }
    return KafkaSettings(**values)


# --------------------------------------------------------------------------- Kafka


def test_secret_settings_are_found() -> None:
    assert {
        "FRAUDSTREAM_KAFKA__SASL_PASSWORD",
        "FRAUDSTREAM_KAFKA__SSL_KEY_PASSWORD",
        "FRAUDSTREAM_REDIS__PASSWORD",
    } <= set(SECRETS)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_confluent_config_per_protocol(protocol: str, pki: Pki) -> None:
    uses_tls = protocol in ("SSL", "SASL_SSL")
    kafka = kafka_settings(protocol, pki if uses_tls else None)
    expected: dict[str, Any] = {
        "bootstrap.servers": BOOTSTRAP,
        "security.protocol": protocol,
        "client.id": "fraudstream",
    }
    if protocol.startswith("SASL"):
        expected |= {
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "fraudstream",
            "sasl.password": SECRETS["FRAUDSTREAM_KAFKA__SASL_PASSWORD"],
        }
    if uses_tls:
        expected |= {
            "ssl.ca.location": str(pki.ca),
            "ssl.certificate.location": str(pki.client_cert),
            "ssl.key.location": str(pki.client_key),
            "ssl.key.password": pki.key_password,
        }
    assert confluent_config(kafka, BOOTSTRAP) == expected
    # producers and consumers start from the same configuration
    for conf in (producer_config(kafka, BOOTSTRAP), consumer_config(kafka, BOOTSTRAP, "g")):
        assert {k: conf[k] for k in expected} == expected


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_credentials_per_protocol(protocol: str, pki: Pki) -> None:
    uses_tls = protocol in ("SSL", "SASL_SSL")
    kafka = kafka_settings(protocol, pki if uses_tls else None)
    credentials = faust_credentials(kafka)
    app = create_app(Settings(kafka=kafka), BOOTSTRAP)
    assert type(app.conf.broker_credentials) is type(credentials)
    # what Faust hands to aiokafka, for its producer and its consumer alike
    auth = dict(credentials_to_aiokafka_auth(app.conf.broker_credentials))
    assert auth["security_protocol"] == protocol
    if protocol.startswith("SASL"):
        assert isinstance(credentials, faust.SASLCredentials)
        assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
        assert auth["sasl_plain_username"] == "fraudstream"
        assert auth["sasl_plain_password"] == SECRETS["FRAUDSTREAM_KAFKA__SASL_PASSWORD"]
    if uses_tls:
        context = auth["ssl_context"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert [c["subject"] for c in context.get_ca_certs()] == [
            ((("commonName", "fraudstream test CA"),),)
        ]
    else:
        assert auth.get("ssl_context") is None


def test_tls_context_without_a_ca_file_trusts_the_system_cas() -> None:
    context = ssl_context(KafkaSettings(security_protocol="SSL"))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_wrong_key_password_names_the_setting(pki: Pki) -> None:
    kafka = kafka_settings("SSL", pki).model_copy(
        update={"ssl_key_password": SecretStr("not-the-passphrase")}
    )
    with pytest.raises(SettingsError, match="FRAUDSTREAM_KAFKA__SSL_KEY_PASSWORD") as caught:
        faust_credentials(kafka)
    assert "not-the-passphrase" not in str(caught.value)


@pytest.mark.parametrize("missing", ["sasl_username", "sasl_password"])
def test_sasl_without_credentials_names_the_settings(missing: str) -> None:
    kafka = kafka_settings("SASL_PLAINTEXT").model_copy(update={missing: None})
    for build in (lambda: confluent_config(kafka, BOOTSTRAP), lambda: faust_credentials(kafka)):
        with pytest.raises(SettingsError) as caught:
            build()
        assert "FRAUDSTREAM_KAFKA__SASL_USERNAME" in str(caught.value)
        assert "FRAUDSTREAM_KAFKA__SASL_PASSWORD" in str(caught.value)


def test_tls_files_are_checked_when_settings_load(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="FRAUDSTREAM_KAFKA__SSL_CAFILE"):
        load_settings({"FRAUDSTREAM_KAFKA__SSL_CAFILE": str(tmp_path / "nope.pem")}, None)
    with pytest.raises(SettingsError, match="FRAUDSTREAM_KAFKA__SSL_KEYFILE"):
        load_settings({"FRAUDSTREAM_KAFKA__SSL_CERTFILE": str(pki.client_cert)}, None)
    with pytest.raises(SettingsError, match="FRAUDSTREAM_REDIS__SSL_CA_CERTS"):
        load_settings({"FRAUDSTREAM_REDIS__SSL_CA_CERTS": str(tmp_path / "nope.pem")}, None)
    with pytest.raises(SettingsError, match="rediss://"):
        load_settings(
            {
                "FRAUDSTREAM_REDIS__URL": "redis://h:1/0",
                "FRAUDSTREAM_REDIS__SSL_CA_CERTS": str(pki.ca),
            },
            None,
        )


# --------------------------------------------------------------------------- Redis


def test_redis_client_carries_user_password_and_tls(pki: Pki) -> None:
    password = SECRETS["FRAUDSTREAM_REDIS__PASSWORD"]
    plain = Settings(redis={"url": "redis://h:6379/2", "username": "app", "password": password})
    client = stack.redis_client("redis://h:6379/2", plain)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("app", password, 2)
    assert client.connection_pool.connection_class is redis.Connection
    assert password not in repr(client)

    url = "rediss://h:6380/0"
    tls = Settings(
        redis={"url": url, "username": "app", "password": password, "ssl_ca_certs": pki.ca}
    )
    pool = stack.redis_client(url, tls).connection_pool
    assert pool.connection_class is redis.SSLConnection
    kwargs = pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == str(pki.ca)
    assert kwargs["ssl_cert_reqs"] == "required" and kwargs["ssl_check_hostname"] is True


@pytest.mark.parametrize(
    "password", ["p@ss=word", "123", "true", "null", '"quoted"', "{x}", "ünïcødé\\", " sp ace "]
)
def test_feast_reads_back_the_credentials_it_is_given(password: str, pki: Pki) -> None:
    url = "rediss://cache:6380/3"
    settings = RedisSettings(url=url, username="42", password=password, ssl_ca_certs=pki.ca)
    nodes, params = RedisOnlineStore._parse_connection_string(
        feast_connection_string(url, settings)
    )
    assert nodes == [{"host": "cache", "port": "6380"}]
    assert params == {
        "db": 3,
        "ssl": True,
        "ssl_ca_certs": str(pki.ca),
        "username": "42",
        "password": password,
    }


@pytest.mark.parametrize(
    "password", ["s3cret: tail", "Tr0ub4dor #3", "ends:", "- dash", "a'b\"c", "{x: [1]}", "ünï"]
)
def test_feast_s_own_config_loader_reads_back_any_password(
    password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feast expands the variable into feature_store.yaml's text before parsing the YAML."""
    from feast.repo_config import load_repo_config

    from fraudstream.feast_env import feast_environment

    url = "redis://cache:6380/3"
    settings = Settings(redis={"url": url, "password": password})
    endpoints = stack.Endpoints("k:9092", url, kafka_external=True, redis_external=True)
    for name, value in feast_environment(settings, endpoints).items():
        monkeypatch.setenv(name, value)
    repo = REPO_ROOT / "feature_repo"
    config = load_repo_config(repo, repo / "feature_store.yaml")
    _, params = RedisOnlineStore._parse_connection_string(config.online_store.connection_string)
    assert params["password"] == password and params["db"] == 3


@pytest.mark.parametrize(
    "url", ["redis://:hunter2@cache/0", "http://u:hunter2@cache:6379", "rediss://u:hunter2@:1/0"]
)
def test_a_password_in_the_redis_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(SettingsError, match="FRAUDSTREAM_REDIS__PASSWORD") as caught:
        load_settings({"FRAUDSTREAM_REDIS__URL": url}, None)
    assert "hunter2" not in str(caught.value)


def test_a_section_that_is_not_json_is_named_without_echoing_it() -> None:
    with pytest.raises(SettingsError, match="FRAUDSTREAM_REDIS: not valid JSON") as caught:
        load_settings({"FRAUDSTREAM_REDIS": '{"password": "hunter2",'}, None)
    assert "hunter2" not in str(caught.value)


def test_a_comma_in_a_redis_credential_is_refused_without_echoing_it() -> None:
    with pytest.raises(SettingsError, match="FRAUDSTREAM_REDIS__PASSWORD") as caught:
        load_settings({"FRAUDSTREAM_REDIS__PASSWORD": "top,secret"}, None)
    assert "top,secret" not in str(caught.value)


# --------------------------------------------------------------------------- secrets


@pytest.fixture
def secret_environment(pki: Pki, tmp_path: Path) -> dict[str, str]:
    """Every secret set, TLS and SASL on, endpoints that refuse connections, DEBUG logs."""
    closed = stack.free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FRAUDSTREAM_")}
    env |= SECRETS
    env |= {
        "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}",
        "FRAUDSTREAM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "FRAUDSTREAM_KAFKA__SASL_USERNAME": "fraudstream",
        "FRAUDSTREAM_KAFKA__SSL_CAFILE": str(pki.ca),
        "FRAUDSTREAM_KAFKA__SSL_CERTFILE": str(pki.client_cert),
        "FRAUDSTREAM_KAFKA__SSL_KEYFILE": str(pki.client_key),
        "FRAUDSTREAM_REDIS__URL": f"rediss://127.0.0.1:{closed}/0",
        "FRAUDSTREAM_REDIS__USERNAME": "fraudstream",
        "FRAUDSTREAM_REDIS__SSL_CA_CERTS": str(pki.ca),
        "FRAUDSTREAM_STACK__DIR": str(tmp_path / "stack"),
        "FRAUDSTREAM_LOG_LEVEL": "DEBUG",
    }
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fraudstream", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _leaked(text: str, secrets: dict[str, str] = SECRETS) -> list[str]:
    return [name for name, value in secrets.items() if value in text]


def test_cli_never_prints_a_secret(secret_environment: dict[str, str], tmp_path: Path) -> None:
    shown = _run(["config", "show"], secret_environment, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert _leaked(shown.stdout + shown.stderr) == []
    masked = json.loads(shown.stdout)
    assert masked["kafka"]["sasl_password"] == masked["redis"]["password"] == "**********"

    checked = _run(["check"], secret_environment, tmp_path)
    assert checked.returncode == 2
    assert "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS" in checked.stderr
    assert _leaked(checked.stdout + checked.stderr) == []


def test_env_prints_the_redis_password_only_when_asked(
    secret_environment: dict[str, str], tmp_path: Path
) -> None:
    """``fraudstream env`` (for ``eval "$(fraudstream env)"``) refuses to print the Redis
    password unless asked with ``--reveal-secrets``; then only in Feast's connection."""
    refused = _run(["env"], secret_environment, tmp_path)
    assert refused.returncode == 2
    assert "--reveal-secrets" in refused.stderr and "fraudstream feast" in refused.stderr
    assert _leaked(refused.stdout + refused.stderr) == []
    result = _run(["env", "--reveal-secrets"], secret_environment, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("export FRAUDSTREAM_FEAST_REDIS_CONNECTION=")
    assert _leaked(result.stdout + result.stderr) == ["FRAUDSTREAM_REDIS__PASSWORD"]


def test_redis_errors_never_show_the_password(secret_environment: dict[str, str]) -> None:
    settings = load_settings(secret_environment, None)
    assert settings.redis.url is not None
    with pytest.raises(stack.StackError) as caught:
        stack.check_redis(settings.redis.url, settings)
    assert _leaked(str(caught.value)) == []


def test_building_clients_logs_no_secret_and_reprs_mask_them(
    secret_environment: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = load_settings(secret_environment, None)
    bootstrap = settings.kafka.bootstrap_servers
    assert bootstrap is not None and settings.redis.url is not None
    app = create_app(settings, bootstrap)
    producer_config(settings.kafka, bootstrap)
    consumer_config(settings.kafka, bootstrap, "g")
    client = stack.redis_client(settings.redis.url, settings)
    shown = [
        caplog.text,
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(app),
        repr(app.conf),
        repr(app.conf.broker_credentials),
        repr(client),
        repr(client.connection_pool),
    ]
    assert _leaked("\n".join(shown)) == []


def test_a_connection_dropped_before_the_first_request_names_tls_settings_over_tls() -> None:
    """Over TLS 1.3 a broker that refuses the client's certificate shows as a connection
    dropped during ApiVersion; the check then names the TLS files, not only the protocol."""
    from fraudstream.kafka import _settings_to_check

    line = "127.0.0.1:9093/bootstrap: Disconnected (after 3ms in state APIVERSION_QUERY)"
    plain = _settings_to_check(line)
    assert plain == ["FRAUDSTREAM_KAFKA__SECURITY_PROTOCOL"]
    over_tls = _settings_to_check(line, tls=True)
    assert over_tls[0] == "FRAUDSTREAM_KAFKA__SECURITY_PROTOCOL"
    assert {"FRAUDSTREAM_KAFKA__SSL_CAFILE", "FRAUDSTREAM_KAFKA__SSL_CERTFILE"} <= set(over_tls)


def test_commands_that_need_only_redis_do_not_ask_for_kafka(tmp_path: Path) -> None:
    """``env``, ``feast`` and ``features load-history`` talk to Redis (and Feast) only."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    env = {
        **base,
        "FRAUDSTREAM_REDIS__URL": "redis://127.0.0.1:1/0",  # nothing listens there
        "FRAUDSTREAM_STACK__DIR": str(tmp_path / "no-stack"),
    }
    shown = _run(["env"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("export FRAUDSTREAM_FEAST_REDIS_CONNECTION=")
    assert "127.0.0.1:1,db=0" in shown.stdout
    table = tmp_path / "tx.parquet"
    table.write_bytes(b"")  # never read: Redis is checked first
    loaded = _run(["features", "load-history", "--transactions", str(table)], env, tmp_path)
    assert loaded.returncode == 2
    assert "Kafka" not in loaded.stderr and "FRAUDSTREAM_REDIS__URL" in loaded.stderr, loaded.stderr
