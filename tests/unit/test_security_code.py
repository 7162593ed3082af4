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

from fraudstream.model import MANIFEST_FILE, MODEL_FILE, ModelError, load_artifact, save_artifact

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
