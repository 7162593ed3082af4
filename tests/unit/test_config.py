"""Settings: one typed model, env names derived once, bad values named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fraudstream.cli import app
from fraudstream.config import (
    Settings,
    SettingsError,
    feast_connection_string,
    known_env_names,
    load_settings,
    masked,
    redis_url_with_auth,
)

pytestmark = pytest.mark.unit


def test_defaults(clean_env: Callable[[], Settings]) -> None:
    settings = clean_env()
    assert settings.kafka.bootstrap_servers is None
    assert settings.kafka.partitions == 4
    assert settings.topics.all() == ["transactions", "decisions", "transactions.dlq", "labels"]
    assert settings.redis.url is None
    assert settings.feast.repo_path == Path("feature_repo")


def test_environment_values_are_typed() -> None:
    settings = load_settings(
        {
            "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS": "k1:9092, k2:9093",
            "FRAUDSTREAM_KAFKA__PARTITIONS": "8",
            "FRAUDSTREAM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "FRAUDSTREAM_KAFKA__SASL_PASSWORD": "s3cret",
            "FRAUDSTREAM_TOPICS__DECISIONS": "decisions.v2",
            "FRAUDSTREAM_REDIS__URL": "rediss://cache:6380/2",
        },
        env_file=None,
    )
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9093"
    assert settings.kafka.partitions == 8
    assert settings.kafka.uses_sasl and settings.kafka.uses_ssl
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "s3cret"
    assert settings.topics.decisions == "decisions.v2"


def test_settings_are_frozen() -> None:
    settings = load_settings({}, env_file=None)
    with pytest.raises(Exception, match="frozen"):
        settings.kafka.partitions = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS",
            "localhost",
            "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS",
        ),
        ("FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS", "h:99999", "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS"),
        ("FRAUDSTREAM_KAFKA__PARTITIONS", "zero", "FRAUDSTREAM_KAFKA__PARTITIONS"),
        ("FRAUDSTREAM_KAFKA__SECURITY_PROTOCOL", "TLS", "FRAUDSTREAM_KAFKA__SECURITY_PROTOCOL"),
        ("FRAUDSTREAM_REDIS__URL", "http://x:1", "FRAUDSTREAM_REDIS__URL"),
        ("FRAUDSTREAM_REDIS__URL", "redis://:pw@x:1/0", "FRAUDSTREAM_REDIS__URL"),
        ("FRAUDSTREAM_TOPICS__LABELS", "bad topic", "FRAUDSTREAM_TOPICS__LABELS"),
        ("FRAUDSTREAM_API__PORT", "70000", "FRAUDSTREAM_API__PORT"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({name: value}, env_file=None)
    assert expected in str(err.value)
    assert "Traceback" not in str(err.value)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis://app@cache:6379/0", "FRAUDSTREAM_REDIS__USERNAME"),
        ("redis://[::1]:6379/0", "IPv6"),
        ("redis://cache:6379/zero", "database must be a number"),
        ("redis://cache:6379/0?max_connections=2", "must not carry options"),
    ],
)
def test_a_redis_url_that_feast_would_read_otherwise_is_refused(url: str, why: str) -> None:
    """redis-py would use the URL's user, IPv6 host or options; Feast's connection string
    (``feast_connection_string``) cannot carry them, so the two clients would differ."""
    with pytest.raises(SettingsError) as err:
        load_settings({"FRAUDSTREAM_REDIS__URL": url}, env_file=None)
    assert why in str(err.value)
    assert "FRAUDSTREAM_REDIS__URL" in str(err.value)


@pytest.mark.parametrize("url", ["redis://cache:6379", "redis://cache:6379/", "rediss://c:1/15"])
def test_a_redis_url_without_or_with_a_database_is_taken(url: str) -> None:
    assert load_settings({"FRAUDSTREAM_REDIS__URL": url}, env_file=None).redis.url == url


def test_unknown_variable_is_rejected() -> None:
    with pytest.raises(SettingsError, match=r"FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVER\b"):
        load_settings({"FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVER": "h:1"}, env_file=None)


def test_unknown_key_in_dotenv_names_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("FRAUDSTREAM_REDIS__URL=redis://r:6379/0\nFRAUDSTREAM_TYPO=1\n")
    with pytest.raises(SettingsError, match=r"FRAUDSTREAM_TYPO.*\.env"):
        load_settings({}, env_file=env_file)


def test_dotenv_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("FRAUDSTREAM_REDIS__URL=redis://r:6379/0\n")
    assert load_settings({}, env_file=env_file).redis.url == "redis://r:6379/0"


def test_known_names_cover_every_field() -> None:
    names = known_env_names()
    assert "FRAUDSTREAM_KAFKA__SASL_PASSWORD" in names
    assert "FRAUDSTREAM_TOPICS__DEAD_LETTER" in names
    assert "FRAUDSTREAM_LOG_LEVEL" in names
    assert "FRAUDSTREAM_KAFKA__NOPE" not in names


def test_masked_hides_secrets() -> None:
    settings = load_settings(
        {"FRAUDSTREAM_REDIS__PASSWORD": "hunter2", "FRAUDSTREAM_API__API_KEY": "k3y"},
        env_file=None,
    )
    text = json.dumps(masked(settings))
    assert "hunter2" not in text and "k3y" not in text
    assert masked(settings)["redis"]["password"] == "**********"


def test_config_show_masks_and_fails_cleanly(
    clean_env: Callable[[], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    monkeypatch.setenv("FRAUDSTREAM_KAFKA__SASL_PASSWORD", "topsecret")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    assert "topsecret" not in result.output
    assert json.loads(result.output)["kafka"]["sasl_password"] == "**********"
    monkeypatch.setenv("FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS", "nope")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS" in result.output
    assert "Traceback" not in result.output


def test_redis_connection_strings() -> None:
    settings = load_settings(
        {"FRAUDSTREAM_REDIS__PASSWORD": "p@ss", "FRAUDSTREAM_REDIS__USERNAME": "app"},
        env_file=None,
    )
    assert redis_url_with_auth("redis://h:1/3", settings.redis) == "redis://app:p%40ss@h:1/3"
    assert (
        feast_connection_string("rediss://h:1/3", settings.redis)
        == "h:1,db=3,ssl=true,username=app,password=p@ss"
    )
    plain = load_settings({}, env_file=None)
    assert feast_connection_string("redis://h:1", plain.redis) == "h:1"


def test_dotenv_entries_of_other_tools_are_left_alone(tmp_path: Path) -> None:
    """A shared .env: other tools' variables and the derived Feast one are not settings."""
    env_file = tmp_path / ".env"
    env_file.write_text(
        "AWS_ACCESS_KEY_ID=AKIA0000\n"
        "export FRAUDSTREAM_KAFKA__PARTITIONS=7\n"
        "FRAUDSTREAM_FEAST_REDIS_CONNECTION='\"r:6379,db=0\"'\n"
        "FRAUDSTREAM_REDIS__URL=redis://from-file:6379/0\n"
    )
    settings = load_settings({"FRAUDSTREAM_REDIS__URL": "redis://from-env:6379/0"}, env_file)
    assert settings.kafka.partitions == 7
    assert settings.redis.url == "redis://from-env:6379/0"  # the environment wins


def test_a_malformed_setting_line_in_dotenv_names_the_file_and_line(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OTHER_TOOL=1\nFRAUDSTREAM_KAFKA__PARTITIONS s3cret-ish\n")
    with pytest.raises(SettingsError) as err:
        load_settings({}, env_file=env_file)
    assert f"{env_file}: line 2 is not NAME=VALUE" in str(err.value)
    assert "s3cret-ish" not in str(err.value)  # a value may be a secret


def test_another_tools_unreadable_dotenv_line_is_skipped(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("some tool's line\nFRAUDSTREAM_KAFKA__PARTITIONS=3\n")
    assert load_settings({}, env_file=env_file).kafka.partitions == 3


def test_a_dotenv_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(b"FRAUDSTREAM_KAFKA__PARTITIONS=\xff\n")
    with pytest.raises(SettingsError, match="not UTF-8"):
        load_settings({}, env_file=env_file)


@pytest.mark.parametrize(
    ("command", "other"),
    [("worker", "FRAUDSTREAM_TOPICS__DEAD_LETTER"), ("archive", "FRAUDSTREAM_TOPICS__LABELS")],
)
def test_the_worker_and_the_archive_need_distinct_topics(
    command: str, other: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before any connection (nothing listens at these addresses)."""
    monkeypatch.setenv("FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("FRAUDSTREAM_REDIS__URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv(other, "transactions")
    result = CliRunner().invoke(app, [command])
    assert result.exit_code == 2, result.output
    assert f"FRAUDSTREAM_TOPICS__TRANSACTIONS and {other} are both 'transactions'" in result.output
    # a reader of one topic may point two names at it
    load_settings({other: "transactions"}, env_file=None)


@pytest.mark.parametrize(
    "name",
    [
        "FRAUDSTREAM_MODEL__PROMOTE_MIN_AP_GAIN",
        "FRAUDSTREAM_MODEL__PROMOTE_MAX_AUC_LOSS",
        "FRAUDSTREAM_SCORING__DEGRADED_MAX_APPROVE_AMOUNT",
    ],
)
def test_nan_is_refused_by_name(name: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({name: "nan"}, env_file=None)
    assert name in str(err.value)  # (a bounded field's bound refuses it too)
