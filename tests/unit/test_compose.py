"""The Docker Compose deployment and the application image, checked as files.

No Docker engine is needed: compose/docker-compose.yml is loaded with
``yaml.safe_load`` (anchors and merge keys resolve), Compose's ``${VAR...}``
interpolation is reproduced for the forms the file uses, and compose/Dockerfile is
split into instructions. Each checker is a function that returns its findings, and
is also run on a counter-example, so that a broken file would fail these tests.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from fraudstream.config import Settings, known_env_names, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO_ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
DOCKERIGNORE = COMPOSE_DIR / "Dockerfile.dockerignore"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"

REQUIRED_SERVICES = {"kafka", "redis", "init", "worker", "api", "archive"}
LONG_RUNNING = {"kafka", "redis", "worker", "api", "archive"}
APP_SERVICES = {"init", "worker", "api", "archive"}
PUBLISHING = {"api", "kafka"}


# --- helpers -----------------------------------------------------------------------------


class InterpolationError(ValueError):
    """A ``${VAR:?message}`` variable is unset, as ``docker compose`` would report."""


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable substitution on every string of ``value``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        current = env.get(name)
        missing = not current if op and op.startswith(":") else current is None
        if op and op.endswith("-") and missing:
            return arg
        if op and op.endswith("?") and missing:
            raise InterpolationError(f"{name}: {arg}")
        return current or ""

    return _VAR.sub(substitute, value)


def compose_variables(text: str) -> set[str]:
    """Names of the variables that a Compose file interpolates."""
    return {
        m.group("name") or m.group("bare") for m in _VAR.finditer(text) if not m.group("escaped")
    }


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose.get("services") or {})


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment, from either the mapping or the list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def published_ports(service: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(host_ip, host_port, container_port)`` of every published port (short or long syntax).

    A bare container port is published too (on a random host port): host_port is "".
    """
    result = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            result.append(
                (
                    str(entry.get("host_ip", "")),
                    str(entry.get("published", "")),
                    str(entry["target"]),
                )
            )
            continue
        parts = str(entry).split("/")[0].split(":")
        parts = ["", "", *parts][-3:] if len(parts) < 3 else parts
        result.append((parts[0], parts[1], parts[2]))
    return result


def unknown_fraudstream_env(compose: Mapping[str, Any]) -> list[str]:
    """``service: NAME`` for every ``FRAUDSTREAM_*`` variable that is not a setting."""
    known = known_env_names()
    found = []
    for name, service in services(compose).items():
        for key in environment(service):
            if key.upper().startswith("FRAUDSTREAM_") and key.upper() not in known:
                found.append(f"{name}: {key}")
    return found


def healthcheck_problems(compose: Mapping[str, Any], names: set[str]) -> list[str]:
    problems = []
    for name in sorted(names):
        check = services(compose).get(name, {}).get("healthcheck")
        if not check:
            problems.append(f"{name}: no healthcheck")
            continue
        if check.get("disable"):
            problems.append(f"{name}: healthcheck disabled")
        test = check.get("test")
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        if (
            not isinstance(test, list)
            or len(test) < 2
            or test[0] not in ("CMD", "CMD-SHELL")
            or not all(str(part).strip() for part in test[1:])
        ):
            problems.append(f"{name}: healthcheck has no test command ({test!r})")
    return problems


def command_text(service: Mapping[str, Any]) -> str:
    parts = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if isinstance(value, list):
            parts.extend(str(v) for v in value)
        elif value:
            parts.append(str(value))
    return "\n".join(parts)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append(buffer + stripped)
        buffer = ""
    if buffer:
        logical.append(buffer)
    result = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions per build stage (each starts with its FROM)."""
    stages: list[list[tuple[str, str]]] = []
    for instruction, args in dockerfile_instructions(text):
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args))
    return stages


def dockerfile_problems(text: str) -> list[str]:
    """What keeps a Dockerfile from being this project's application image."""
    stages = dockerfile_stages(text)
    if not stages:
        return ["no FROM"]
    problems = []
    final = stages[-1]
    everything = [item for stage in stages for item in stage]
    args = {  # ARGs before the first FROM are what FROM lines may use
        key: value
        for instruction, rest in dockerfile_instructions(text)
        if instruction == "ARG" and "=" in rest
        for key, value in [rest.split("=", 1)]
    }
    base = final[0][1].split(" AS ")[0].split(" as ")[0].strip()
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), base)
    if not base.startswith("python:3.11-slim"):
        problems.append(f"final stage is not based on python:3.11-slim ({base})")
    installs = [
        rest for instruction, rest in everything if instruction == "RUN" and "pip install" in rest
    ]
    if not any(
        re.search(r"(-c|--constraint)[ =]constraints\.txt\b", rest)
        and re.search(r"\s\.(\s|$|\[)", rest + " ")
        for rest in installs
    ):
        problems.append("no `pip install -c constraints.txt .`")
    if any(re.search(r"\[[^\]]*\bdev\b", rest) for rest in installs):
        problems.append("installs the dev extra")
    if not any(
        instruction == "COPY" and "constraints.txt" in rest.split()
        for instruction, rest in everything
    ):
        problems.append("constraints.txt is not copied into the build")
    users = [rest.split(":")[0].strip() for instruction, rest in final if instruction == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("the final stage runs as root")
    entrypoints = [rest for instruction, rest in final if instruction == "ENTRYPOINT"]
    if not entrypoints:
        problems.append("no ENTRYPOINT")
    else:
        try:
            entrypoint = json.loads(entrypoints[-1])
        except json.JSONDecodeError:
            entrypoint = None
        if entrypoint != ["fraudstream"]:
            problems.append(f'ENTRYPOINT is {entrypoints[-1]}, not ["fraudstream"] (exec form)')
    return problems


def dockerfile_env_names(text: str) -> set[str]:
    names = set()
    for stage in dockerfile_stages(text):
        for instruction, rest in stage:
            if instruction == "ENV":
                for token in shlex.split(rest):
                    if "=" in token:
                        names.add(token.split("=", 1)[0])
    return names


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def resolved(compose: dict[str, Any], example_env: dict[str, str]) -> dict[str, Any]:
    """The compose file as Compose would see it with compose/.env.example as .env."""
    result: dict[str, Any] = interpolate(compose, example_env)
    return result


# --- the compose file --------------------------------------------------------------------


@pytest.mark.unit
def test_required_services_exist(compose: dict[str, Any]) -> None:
    assert set(services(compose)) >= REQUIRED_SERVICES


@pytest.mark.unit
def test_kafka_is_a_single_kraft_node_of_the_official_image(resolved: dict[str, Any]) -> None:
    kafka = services(resolved)["kafka"]
    image = kafka["image"]
    match = re.fullmatch(r"apache/kafka:(\d+)\.(\d+)\.(\d+)", image)
    assert match, f"kafka image {image!r} is not a pinned apache/kafka:X.Y.Z"
    major, minor = int(match.group(1)), int(match.group(2))
    assert (major, minor) == (3, 9) or major >= 4, image

    env = environment(kafka)
    roles = {r.strip() for r in env["KAFKA_PROCESS_ROLES"].split(",")}
    assert roles == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    assert node_id.isdigit()
    listeners = dict(
        (item.split("://")[0], item.split("://")[1]) for item in env["KAFKA_LISTENERS"].split(",")
    )
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners
    controller_port = listeners[controller].rsplit(":", 1)[1]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:{controller_port}"
    assert "PLAINTEXT" in listeners, "no PLAINTEXT listener for the compose network"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocols)

    # The internal listener is what the app containers bootstrap from ...
    advertised = dict(
        (item.split("://")[0], item.split("://")[1])
        for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    for name in APP_SERVICES:
        bootstrap = environment(services(resolved)[name])["FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS"]
        assert bootstrap == advertised["PLAINTEXT"], name
    # ... and the host listener is the one published, advertised with the host's port.
    host_listeners = set(advertised) - {"PLAINTEXT", controller}
    assert len(host_listeners) == 1, advertised
    host_listener = host_listeners.pop()
    ports = published_ports(kafka)
    assert len(ports) == 1, ports
    _, host_port, container_port = ports[0]
    assert listeners[host_listener].rsplit(":", 1)[1] == container_port
    assert advertised[host_listener] == f"localhost:{host_port}"


@pytest.mark.unit
def test_redis_requires_a_password(compose: dict[str, Any], example_env: dict[str, str]) -> None:
    redis = services(compose)["redis"]
    assert str(redis["image"]).split(":")[0] == "redis"
    assert str(redis["image"]).split(":")[1].startswith("7")
    command = [str(part) for part in redis["command"]]
    assert "--requirepass" in command
    secret = command[command.index("--requirepass") + 1]
    assert "${REDIS_PASSWORD:?" in secret, "the password must be required, not defaulted"
    # Without REDIS_PASSWORD, Compose refuses the file instead of starting an open Redis.
    without = {k: v for k, v in example_env.items() if k != "REDIS_PASSWORD"}
    with pytest.raises(InterpolationError, match="REDIS_PASSWORD"):
        interpolate(compose, without)
    # The app containers get the same password, and the URL carries none.
    resolved = interpolate(compose, example_env)
    password = interpolate(secret, example_env)
    assert password == example_env["REDIS_PASSWORD"] != ""
    for name in APP_SERVICES:
        env = environment(services(resolved)[name])
        assert env["FRAUDSTREAM_REDIS__PASSWORD"] == password, name
        assert env["FRAUDSTREAM_REDIS__URL"].startswith("redis://redis:6379/"), name
    assert "redis-cli" in " ".join(str(p) for p in redis["healthcheck"]["test"])


@pytest.mark.unit
def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    assert healthcheck_problems(compose, LONG_RUNNING) == []


@pytest.mark.unit
def test_healthcheck_check_catches_missing_or_empty_tests(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    del broken["services"]["worker"]["healthcheck"]
    broken["services"]["api"]["healthcheck"]["test"] = ["NONE"]
    broken["services"]["redis"]["healthcheck"]["test"] = ["CMD-SHELL", " "]
    problems = healthcheck_problems(broken, LONG_RUNNING)
    assert {p.split(":")[0] for p in problems} == {"worker", "api", "redis"}


@pytest.mark.unit
def test_app_healthchecks_need_no_curl(compose: dict[str, Any]) -> None:
    api_test = " ".join(str(p) for p in services(compose)["api"]["healthcheck"]["test"])
    assert "curl" not in api_test and "wget" not in api_test
    assert "urllib" in api_test and "/health" in api_test and ":8000" in api_test
    worker_test = " ".join(str(p) for p in services(compose)["worker"]["healthcheck"]["test"])
    assert "curl" not in worker_test


@pytest.mark.unit
def test_worker_healthcheck_asks_its_live_endpoint(resolved: dict[str, Any]) -> None:
    """The worker's check is its own /live, on the port its settings serve it on, within
    the compose network (not published: each replica has the same port)."""
    worker = services(resolved)["worker"]
    settings = load_settings(environ=environment(worker), env_file=None)
    port = settings.worker.metrics_port
    assert port is not None and settings.worker.metrics_host == "0.0.0.0"
    assert [str(p) for p in worker["expose"]] == [str(port)]
    assert published_ports(worker) == []
    snippet = worker["healthcheck"]["test"][-1]
    assert f"http://127.0.0.1:{port}/live" in snippet
    # the other app services keep the default (no worker metrics server)
    for name in APP_SERVICES - {"worker"}:
        other = load_settings(environ=environment(services(resolved)[name]), env_file=None)
        assert other.worker.metrics_port is None, name


@pytest.mark.unit
def test_worker_healthcheck_fails_once_the_worker_stalls(compose: dict[str, Any]) -> None:
    """The check itself (run as Docker runs it), against the worker's metrics server:
    exit code 0 while live, 1 once a partition with lag stops committing."""
    from fraudstream.metrics import WorkerMetrics, serve

    test = services(compose)["worker"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    now = [1000.0]
    metrics = WorkerMetrics(stall_after_s=60, clock=lambda: now[0])
    server = serve(metrics, "127.0.0.1", 0)
    port = environment(services(compose)["worker"])["FRAUDSTREAM_WORKER__METRICS_PORT"]
    snippet = test[3].replace(f":{port}/", f":{server.server_address[1]}/")
    assert snippet != test[3]

    def check() -> int:
        done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, timeout=30)
        return done.returncode

    try:
        assert check() == 0
        tp = ("transactions", 0)
        metrics.check_partitions({tp: 100}, {tp: 40})
        now[0] += 61
        metrics.check_partitions({tp: 200}, {tp: 40})  # lag, no commit for 61 s
        assert check() == 1
    finally:
        server.shutdown()


@pytest.mark.unit
def test_worker_is_scalable(compose: dict[str, Any]) -> None:
    worker = services(compose)["worker"]
    assert "container_name" not in worker
    assert "hostname" not in worker
    assert published_ports(worker) == []
    assert command_text(worker).split() == ["worker"]


@pytest.mark.unit
def test_init_runs_once_and_the_others_wait_for_it(compose: dict[str, Any]) -> None:
    svc = services(compose)
    init = svc["init"]
    assert str(init.get("restart")) == "no"
    assert "healthcheck" not in init
    for dependency in ("kafka", "redis"):
        assert init["depends_on"][dependency]["condition"] == "service_healthy"
    for name in ("worker", "api"):
        assert svc[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    script = command_text(init)
    steps = [
        "ensure_topics(",
        "fraudstream feast apply",
        "fraudstream train --out /models/current",
        "fraudstream feast materialize-incremental",
    ]
    positions = [script.find(step) for step in steps]
    assert -1 not in positions, dict(zip(steps, positions, strict=True))
    assert positions == sorted(positions), "init steps are out of order"
    assert "date -u" in script, "materialize-incremental needs the current UTC time"


@pytest.mark.unit
def test_app_services_run_the_cli_commands(compose: dict[str, Any]) -> None:
    svc = services(compose)
    api = command_text(svc["api"]).split()
    assert api[0] == "serve"
    assert api[api.index("--host") + 1] == "0.0.0.0"
    assert api[api.index("--port") + 1] == "8000"
    for name in ("worker", "api"):
        assert "entrypoint" not in svc[name], f"{name} must use the image's fraudstream entrypoint"


@pytest.mark.unit
def test_only_the_api_and_kafka_publish_ports(resolved: dict[str, Any]) -> None:
    publishing = {name for name, s in services(resolved).items() if published_ports(s)}
    assert publishing == PUBLISHING
    (api_port,) = published_ports(services(resolved)["api"])
    assert api_port[2] == "8000"
    for host_ip, host_port, _ in published_ports(services(resolved)["kafka"]):
        assert host_port, "Kafka's host listener needs a fixed host port to advertise"
        assert host_ip in ("127.0.0.1", "localhost"), "Kafka advertises localhost"


@pytest.mark.unit
def test_port_check_sees_every_port_syntax() -> None:
    assert published_ports({"ports": ["6379"]}) == [("", "", "6379")]
    assert published_ports({"ports": ["6380:6379/tcp"]}) == [("", "6380", "6379")]
    assert published_ports({"ports": ["127.0.0.1:6380:6379"]}) == [("127.0.0.1", "6380", "6379")]
    assert published_ports({"ports": [{"target": 6379, "published": "6380"}]}) == [
        ("", "6380", "6379")
    ]
    assert published_ports({"expose": ["6379"]}) == []


@pytest.mark.unit
def test_fraudstream_env_names_are_settings(compose: dict[str, Any]) -> None:
    names = {
        key
        for s in services(compose).values()
        for key in environment(s)
        if key.startswith("FRAUDSTREAM_")
    }
    assert names, "no FRAUDSTREAM_* variables found: the check would be vacuous"
    assert unknown_fraudstream_env(compose) == []


@pytest.mark.unit
def test_env_name_check_catches_a_bogus_name(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    # A typo (singular SERVER) in the mapping form, and a derived variable in the list form.
    broken["services"]["worker"]["environment"] = {
        **environment(broken["services"]["worker"]),
        "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVER": "kafka:9092",
    }
    broken["services"]["api"]["environment"] = [
        "FRAUDSTREAM_FEAST_REDIS_CONNECTION=redis:6379",
        "FRAUDSTREAM_API__PORT=8000",
    ]
    assert unknown_fraudstream_env(broken) == [
        "worker: FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVER",
        "api: FRAUDSTREAM_FEAST_REDIS_CONNECTION",
    ]
    # The anchor itself is checked through the services that use it.
    assert unknown_fraudstream_env(compose) == []


@pytest.mark.unit
def test_app_environment_loads_as_settings(resolved: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        env = environment(services(resolved)[name])
        settings: Settings = load_settings(environ=env, env_file=None)
        assert settings.kafka.bootstrap_servers == "kafka:9092", name
        assert settings.redis.url == "redis://redis:6379/0", name
        assert settings.redis.password is not None, name
        assert str(settings.model.dir) == "/models/current", name
        assert str(settings.feast.repo_path) == "/app/feature_repo", name


@pytest.mark.unit
def test_app_services_share_the_image_and_volumes(compose: dict[str, Any]) -> None:
    svc = services(compose)
    images = {svc[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, images
    for name in APP_SERVICES:
        build = svc[name]["build"]
        assert build["context"] == ".."
        assert build["dockerfile"] == "compose/Dockerfile"
        assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in svc[name]["volumes"]}
        assert mounts.get("/models") == "models", name
        assert mounts.get("/app/feature_repo/data") == "feast-data", name
        model_dir = environment(svc[name])["FRAUDSTREAM_MODEL__DIR"]
        assert model_dir.startswith("/models/"), "the model must live on the shared volume"
    declared = set(compose.get("volumes") or {})
    assert {"models", "feast-data"} <= declared


@pytest.mark.unit
def test_env_example_sets_every_required_variable(compose: dict[str, Any]) -> None:
    example = read_env_file(ENV_EXAMPLE)
    assert example.get("REDIS_PASSWORD"), ".env.example must show REDIS_PASSWORD"
    variables = compose_variables(COMPOSE_FILE.read_text())
    assert "REDIS_PASSWORD" in variables
    assert variables <= set(example), f"not in .env.example: {variables - set(example)}"
    # .env.example is enough for Compose to resolve the whole file.
    interpolate(compose, example)


@pytest.mark.unit
def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $$HOME", env) == "x d d  $HOME"
    with pytest.raises(InterpolationError):
        interpolate("${EMPTY:?required}", env)
    assert compose_variables("$${NOT_A_VAR} ${A:-1} ${B:?x} $C") == {"A", "B", "C"}


# --- the image ---------------------------------------------------------------------------


@pytest.mark.unit
def test_dockerfile_builds_the_application_image() -> None:
    assert DOCKERFILE.is_file()
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.unit
def test_dockerfile_check_catches_a_bad_image() -> None:
    bad = (
        "FROM python:3.11-slim\n"
        "COPY . .\n"
        "RUN pip install \\\n    .[dev]\n"
        "USER root\n"
        "ENTRYPOINT fraudstream\n"
    )
    problems = dockerfile_problems(bad)
    assert "no `pip install -c constraints.txt .`" in problems
    assert "installs the dev extra" in problems
    assert "constraints.txt is not copied into the build" in problems
    assert "the final stage runs as root" in problems
    assert any(p.startswith("ENTRYPOINT is") for p in problems)
    # Without any USER the image runs as root too; only the final stage counts.
    no_user = (
        "FROM python:3.11-slim AS build\nUSER app\nCOPY constraints.txt .\n"
        "RUN pip install -c constraints.txt .\n"
        'FROM python:3.11-slim\nENTRYPOINT ["fraudstream"]\n'
    )
    assert dockerfile_problems(no_user) == ["the final stage runs as root"]


@pytest.mark.unit
def test_dockerfile_env_names_are_settings() -> None:
    names = {
        n for n in dockerfile_env_names(DOCKERFILE.read_text()) if n.startswith("FRAUDSTREAM_")
    }
    assert names <= known_env_names(), names - known_env_names()


@pytest.mark.unit
def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".venv", ".stack", "data", "models", ".pytest_cache", ".env"):
        assert required in patterns, required
    for needed in ("constraints.txt", "pyproject.toml", "README.md", "fraudstream", "feature_repo"):
        assert needed not in patterns, f"{needed} is needed in the build context"


# --- security ----------------------------------------------------------------------------

_REQUIRED_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}")


def secret_literals(compose: Mapping[str, Any]) -> list[str]:
    """``service: NAME`` for every secret whose value is not a required ``${VAR:?...}``.

    Secrets are the ``SecretStr`` settings, ``REDISCLI_AUTH`` and ``--requirepass``.
    """
    from tests.security_support import secret_env_names

    secret_names = set(secret_env_names()) | {"REDISCLI_AUTH"}
    found = []
    for name, service in services(compose).items():
        values = {k: v for k, v in environment(service).items() if k.upper() in secret_names}
        command = [str(part) for part in service.get("command") or []]
        if "--requirepass" in command:
            values["--requirepass"] = command[command.index("--requirepass") + 1]
        found += [
            f"{name}: {key}"
            for key, value in values.items()
            if not _REQUIRED_VARIABLE.fullmatch(value)
        ]
    return found


@pytest.mark.unit
def test_secrets_come_from_required_variables(compose: dict[str, Any]) -> None:
    assert secret_literals(compose) == []
    assert "requirepass" in command_text(services(compose)["redis"])


@pytest.mark.unit
def test_secret_check_catches_a_literal_or_a_default(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["command"] = ["redis-server", "--requirepass", "hunter2"]
    broken["services"]["worker"]["environment"] = {
        **environment(broken["services"]["worker"]),
        "FRAUDSTREAM_REDIS__PASSWORD": "${REDIS_PASSWORD:-hunter2}",
        "FRAUDSTREAM_KAFKA__SASL_PASSWORD": "plain-text",
    }
    assert sorted(secret_literals(broken)) == [
        "redis: --requirepass",
        "worker: FRAUDSTREAM_KAFKA__SASL_PASSWORD",
        "worker: FRAUDSTREAM_REDIS__PASSWORD",
    ]


@pytest.mark.unit
def test_the_password_stays_out_of_files_and_command_lines(example_env: dict[str, str]) -> None:
    assert example_env["REDIS_PASSWORD"] not in COMPOSE_FILE.read_text()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(COMPOSE_DIR / ".env")], cwd=REPO_ROOT, check=False
    )
    assert ignored.returncode == 0, "compose/.env (which holds REDIS_PASSWORD) must be git-ignored"
    redis = services(yaml.safe_load(COMPOSE_FILE.read_text()))["redis"]
    check = [str(part) for part in redis["healthcheck"]["test"]]
    assert not {"-a", "--pass", "--askpass"} & set(" ".join(check).split())
    assert environment(redis)["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")


@pytest.mark.unit
def test_by_default_only_loopback_ports_are_published(compose: dict[str, Any]) -> None:
    """With nothing but the required password set, no port is reachable from another host,
    and Redis is not published at all (containers reach it on the compose network)."""
    minimal = interpolate(compose, {"REDIS_PASSWORD": "x" * 24})
    published = {name: published_ports(s) for name, s in services(minimal).items()}
    assert published["redis"] == [] and "6379" in [
        str(p) for p in services(minimal)["redis"]["expose"]
    ]
    assert {name for name, ports in published.items() if ports} == PUBLISHING
    for name, ports in published.items():
        for host_ip, _, _ in ports:
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip or 'all interfaces'}"
