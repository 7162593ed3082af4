"""The code itself: no pickle anywhere, one builder per client family, verified models.

Source files are read as ASTs (nothing is imported). Each checker returns its findings
and is also run on counter-examples, so that a checker that finds nothing cannot pass
by accident.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from fraudstream.model import (
    MANIFEST_FILE,
    MODEL_FILE,
    ModelError,
    load_artifact,
    save_artifact,
    sha256_file,
)

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The product's code path (and the benchmarks that drive it).
SOURCE_DIRS = ["fraudstream", "streaming", "training", "serving", "feature_repo", "benchmarks"]

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}
PICKLE_CALLS = {"read_pickle", "to_pickle"}
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".dill")
#: Feast stores these with dill (their Python code is pickled into the registry).
PICKLED_FEAST_OBJECTS = {
    "OnDemandFeatureView",
    "on_demand_feature_view",
    "StreamFeatureView",
    "stream_feature_view",
}


def source_files() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in sorted((REPO_ROOT / d).rglob("*.py"))]
    assert len(files) > 20, "the scan found almost no source: check SOURCE_DIRS"
    return files


def _name(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def pickle_findings(source: str, where: str = "<src>") -> list[str]:
    """Every use of pickle (or a format or API built on it) in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [
                f"{line} import {a.name}"
                for a in node.names
                if a.name.split(".")[0] in PICKLE_MODULES
            ]
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in PICKLE_MODULES:
                found.append(f"{line} from {node.module} import")
            found += [
                f"{line} import {a.name}" for a in node.names if a.name in PICKLED_FEAST_OBJECTS
            ]
        elif isinstance(node, ast.Call):
            called = _name(node.func)
            if called.rsplit(".", 1)[-1] in PICKLE_CALLS:
                found.append(f"{line} {called}()")
            if called in ("np.load", "numpy.load"):
                for kw in node.keywords:
                    if kw.arg == "allow_pickle" and not (
                        isinstance(kw.value, ast.Constant) and kw.value.value is False
                    ):
                        found.append(f"{line} {called}(allow_pickle=...)")
        elif isinstance(node, ast.Name | ast.Attribute):
            if _name(node).rsplit(".", 1)[-1] in PICKLED_FEAST_OBJECTS:
                found.append(f"{line} {_name(node)}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.lower().endswith(PICKLE_SUFFIXES)
        ):
            found.append(f"{line} file name {node.value!r}")
    return found


def client_findings(source: str, where: str) -> list[str]:
    """Kafka, Faust and Redis clients built outside their one builder."""
    module = where.replace("\\", "/")
    tree = ast.parse(source)
    imported = {
        a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "fraudstream.kafka"
        for a in n.names
    }
    uses_builder = bool(imported & {"confluent_config", "producer_config", "consumer_config"})
    outside_kafka = module != "fraudstream/kafka.py"
    found = []
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        keys = node.keys if isinstance(node, ast.Dict) else []
        if outside_kafka and any(
            isinstance(k, ast.Constant) and k.value in ("bootstrap.servers", "security.protocol")
            for k in keys
        ):
            found.append(f"{line} a librdkafka configuration written by hand")
        if not isinstance(node, ast.Call):
            continue
        called = _name(node.func)
        last = called.rsplit(".", 1)[-1]
        confluent = last in ("Producer", "Consumer", "AdminClient")
        if confluent and outside_kafka and not uses_builder:
            found.append(f"{line} {called}() without a fraudstream.kafka builder")
        if last.startswith("AIOKafka"):
            found.append(f"{line} {called}(): Kafka clients of Faust come from create_app")
        if called in ("faust.App", "App") and module != "streaming/app.py":
            found.append(f"{line} {called}(): the Faust app comes from streaming.app.create_app")
        redis_calls = ("Redis", "StrictRedis", "from_url", "ConnectionPool", "RedisCluster")
        if last in redis_calls and "redis" in called.lower() and module != "fraudstream/stack.py":
            found.append(f"{line} {called}(): Redis clients come from stack.redis_client")
    return found


# --------------------------------------------------------------------------- no pickle


def test_no_pickle_in_the_code_path() -> None:
    findings = [
        finding
        for path in source_files()
        for finding in pickle_findings(path.read_text(), str(path.relative_to(REPO_ROOT)))
    ]
    assert findings == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "import dill as d",
        "from joblib import dump",
        "import cloudpickle",
        "from shelve import open",
        "import _pickle",
        "df.to_pickle(path)",
        "pd.read_pickle(path)",
        "np.load(path, allow_pickle=True)",
        "numpy.load(path, allow_pickle=flag)",
        "booster.save_model('model.pkl')",
        "open(f'{name}.joblib', 'wb')",
        "from feast import OnDemandFeatureView",
        "@on_demand_feature_view(sources=[s], schema=[])\ndef f(df): return df",
        "from feast import StreamFeatureView",
        "import feast\nv = feast.StreamFeatureView(name='x')",
    ],
)
def test_pickle_check_catches(snippet: str) -> None:
    assert pickle_findings(snippet) != [], snippet


def test_pickle_check_lets_safe_code_through() -> None:
    safe = "np.load(path, allow_pickle=False)\nbooster.save_model('model.ubj')\nimport json\n"
    assert pickle_findings(safe) == []


# --------------------------------------------------------------------------- one builder


def test_every_client_is_built_by_its_one_builder() -> None:
    findings = [
        finding
        for path in source_files()
        for finding in client_findings(path.read_text(), str(path.relative_to(REPO_ROOT)))
    ]
    assert findings == []


@pytest.mark.parametrize(
    "snippet",
    [
        "from confluent_kafka import Producer\np = Producer({'bootstrap.servers': 'h:1'})",
        "import confluent_kafka\nc = confluent_kafka.Consumer(conf)",
        "from aiokafka import AIOKafkaProducer\np = AIOKafkaProducer(bootstrap_servers='h:1')",
        "import faust\napp = faust.App('x', broker='kafka://h:1')",
        "import redis\nr = redis.Redis(host='h')",
        "import redis\nr = redis.Redis.from_url('redis://h:1')",
        "import redis.asyncio\nr = redis.asyncio.Redis(host='h')",
    ],
)
def test_client_check_catches(snippet: str) -> None:
    assert client_findings(snippet, "fraudstream/elsewhere.py") != [], snippet


def test_client_check_accepts_the_builders() -> None:
    good = (
        "from confluent_kafka import Producer\n"
        "from fraudstream.kafka import producer_config\n"
        "p = Producer(producer_config(kafka, bootstrap))\n"
        "from fraudstream.stack import redis_client\nr = redis_client(url, settings)\n"
    )
    assert client_findings(good, "fraudstream/elsewhere.py") == []


# --------------------------------------------------------------------------- model files


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    rows = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.2, 0.9]])
    matrix = xgb.DMatrix(rows, label=[0, 1, 1, 0], feature_names=["a", "b"])
    booster = xgb.train({"objective": "binary:logistic", "nthread": 1}, matrix, 2)
    manifest = {
        "model_version": "security-test",
        "features": [{"name": "a"}, {"name": "b"}],
        "thresholds": {"review": 0.5, "decline": 0.9},
    }
    return save_artifact(tmp_path / "model", booster, manifest)


def test_model_artifact_is_ubj_with_its_sha256(artifact: Path) -> None:
    assert sorted(p.name for p in artifact.iterdir()) == sorted([MANIFEST_FILE, MODEL_FILE])
    assert (artifact / MODEL_FILE).read_bytes()[:1] == b"{"  # UBJSON, not a pickle stream
    assert load_artifact(artifact).version == "security-test"


def test_a_tampered_model_file_is_refused(artifact: Path) -> None:
    model = artifact / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        load_artifact(artifact)


@pytest.mark.parametrize("model_file", ["model.pkl", "../model.ubj", "model.joblib"])
def test_a_manifest_cannot_point_at_another_file(artifact: Path, model_file: str) -> None:
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    manifest["model_file"] = model_file
    (artifact / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"\.ubj or \.json file beside it"):
        load_artifact(artifact)


def _rewrite_manifest(artifact: Path, **fields: object) -> Path:
    path = artifact / MANIFEST_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return path


def _refused_in_one_line(artifact: Path, named: Path, match: str) -> None:
    with pytest.raises(ModelError, match=match) as caught:
        load_artifact(artifact)
    message = str(caught.value)
    assert message.startswith(f"{named}: ") and "\n" not in message, message


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"model_file": None}, "model_file: Input should be a valid string"),
        ({"model_version": 7}, "model_version: Input should be a valid string"),
        ({"model_sha256": None}, "model_sha256: Input should be a valid string"),
        ({"features": [{"source": "x"}]}, r"features\.0\.name: Field required"),
        ({"features": "a,b"}, "features: Input should be a valid list"),
        ({"features": []}, "features: List should have at least 1 item"),
        ({"thresholds": "high"}, "thresholds: Input should be a valid dictionary"),
        ({"thresholds": {"review": "0.5", "decline": 0.9}}, r"thresholds\.review: .*number"),
        ({"thresholds": {"review": 0.5}}, r"thresholds\.decline: Field required"),
        ({"thresholds": {"review": float("nan"), "decline": 0.9}}, r"review: .*finite"),
        ({"thresholds": {"review": 0.5, "decline": 1.5}}, r"decline: .*less than or equal to 1"),
        ({"thresholds": {"review": 0.95, "decline": 0.9}}, "review 0.95 is above decline 0.9"),
        ({"metrics": "n/a"}, "metrics: Input should be a valid dictionary"),
    ],
)
def test_a_manifest_with_a_wrong_field_is_refused_naming_it(
    artifact: Path, fields: dict[str, object], match: str
) -> None:
    path = _rewrite_manifest(artifact, **fields)
    _refused_in_one_line(artifact, path, match)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\xff\xfe\x00binary", "not valid JSON"),
        (b"{bad", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"null", "not a JSON object"),
    ],
)
def test_a_manifest_that_is_no_json_object_is_refused(
    artifact: Path, content: bytes, match: str
) -> None:
    (artifact / MANIFEST_FILE).write_bytes(content)
    _refused_in_one_line(artifact, artifact / MANIFEST_FILE, match)


def test_a_foreign_model_file_with_a_matching_sha256_is_refused_in_one_line(
    artifact: Path,
) -> None:
    (artifact / MODEL_FILE).unlink()
    foreign = artifact / "model.json"
    foreign.write_text('{"hello": "world"}')
    _rewrite_manifest(artifact, model_file="model.json", model_sha256=sha256_file(foreign))
    _refused_in_one_line(artifact, foreign, r"not an XGBoost model \(.*\)$")


def test_a_model_reading_another_number_of_features_is_refused(tmp_path: Path) -> None:
    rows = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 2.0], [0.5, 0.5, 1.0], [0.2, 0.9, 0.0]])
    matrix = xgb.DMatrix(rows, label=[0, 1, 1, 0])  # no feature names to compare
    booster = xgb.train({"objective": "binary:logistic", "nthread": 1}, matrix, 2)
    manifest = {
        "model_version": "three-columns",
        "features": [{"name": "a"}, {"name": "b"}],
        "thresholds": {"review": 0.5, "decline": 0.9},
    }
    out = save_artifact(tmp_path / "model", booster, manifest)
    _refused_in_one_line(out, out / MODEL_FILE, "reads 3 features, the manifest names 2")


def test_integer_thresholds_and_keys_the_code_does_not_read_are_accepted(
    artifact: Path,
) -> None:
    """Checked, not rewritten: the manifest stays as written for its other readers."""
    _rewrite_manifest(artifact, thresholds={"review": 0, "decline": 1, "rule": "by hand"})
    loaded = load_artifact(artifact)
    assert (loaded.thresholds.review, loaded.thresholds.decline) == (0.0, 1.0)
    assert loaded.manifest["thresholds"]["rule"] == "by hand"  # kept as written
