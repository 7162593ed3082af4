"""The Prometheus alert rules (``compose/prometheus/alerts.yml``), checked against the code.

Each expression is parsed (``promql-parser``, Prometheus' grammar), and every metric it
reads must be one that :mod:`fraudstream.metrics` exports, with labels that metric has;
every ``$labels.x`` an annotation uses must survive the expression's aggregations. So a
renamed metric or label fails here instead of silencing an alert. Each check also runs on a
counter-example.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import promql_parser as promql
import pytest
import yaml

from fraudstream.metrics import ApiMetrics, Counter, Gauge, Histogram, QualityMetrics, WorkerMetrics

pytestmark = pytest.mark.unit

RULES = Path(__file__).resolve().parents[2] / "compose" / "prometheus" / "alerts.yml"
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"instance", "job"})
COMPARISONS = {">", "<", ">=", "<=", "==", "!="}
SEVERITIES = {"critical", "warning"}
DURATION = re.compile(r"^\d+[smhd]$")


def exported() -> dict[str, frozenset[str]]:
    """Every series name the worker, the API and the archive export, with its labels."""
    names: dict[str, frozenset[str]] = {}
    for owner in (WorkerMetrics(60.0), ApiMetrics(), QualityMetrics()):
        for family in owner.families:
            labels = frozenset(family.labelnames)
            if isinstance(family, Counter):
                names[f"{family.name}_total"] = labels
            elif isinstance(family, Histogram):
                names[f"{family.name}_bucket"] = labels | {"le"}
                names[f"{family.name}_count"] = labels
                names[f"{family.name}_sum"] = labels
            else:
                assert isinstance(family, Gauge)
                names[family.name] = labels
    return names


def _scalar(expr: Any) -> bool:
    if isinstance(expr, promql.ParenExpr):
        return _scalar(expr.expr)
    if isinstance(expr, promql.Call):
        return expr.func.return_type == promql.ValueType.Scalar
    return isinstance(expr, promql.NumberLiteral)


def output_labels(expr: Any, names: dict[str, frozenset[str]]) -> frozenset[str]:
    """The labels the result of ``expr`` can carry (what an annotation may template)."""
    if isinstance(expr, promql.ParenExpr):
        return output_labels(expr.expr, names)
    if isinstance(expr, promql.VectorSelector):
        return names.get(expr.name or "", frozenset()) | TARGET_LABELS
    if isinstance(expr, promql.MatrixSelector):
        return output_labels(expr.vector_selector, names)
    if isinstance(expr, promql.NumberLiteral):
        return frozenset()
    if isinstance(expr, promql.AggregateExpr):
        modifier = expr.modifier
        if modifier is None:
            return frozenset()
        inner = output_labels(expr.expr, names)
        if str(modifier.type).endswith("By"):
            return frozenset(modifier.labels)
        return inner - frozenset(modifier.labels)
    if isinstance(expr, promql.Call):
        if expr.func.name == "time":
            return frozenset()
        [vector] = [a for a in expr.args if not isinstance(a, promql.NumberLiteral)]
        labels = output_labels(vector, names)
        return labels - {"le"} if expr.func.name == "histogram_quantile" else labels
    if isinstance(expr, promql.BinaryExpr):
        lhs, rhs = output_labels(expr.lhs, names), output_labels(expr.rhs, names)
        if _scalar(expr.lhs) or _scalar(expr.rhs):
            return lhs | rhs  # vector op scalar: the vector's labels
        return lhs & rhs  # one-to-one match: the labels both sides carry
    raise AssertionError(f"no rule for {type(expr).__name__}: {expr}")


def rule_problems(rules: dict[str, Any]) -> list[str]:
    """What is wrong with the rule file: structure, syntax, metric and label names."""
    names = exported()
    problems: list[str] = []
    seen: set[str] = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            alert = rule.get("alert", "?")
            if alert in seen:
                problems.append(f"{alert}: defined twice")
            seen.add(alert)
            if not re.fullmatch(r"Fraudstream[A-Z][A-Za-z]+", alert):
                problems.append(f"{alert}: not a FraudstreamCamelCase name")
            if "for" in rule and not DURATION.match(str(rule["for"])):
                problems.append(f"{alert}: bad duration {rule['for']!r}")
            if rule.get("labels", {}).get("severity") not in SEVERITIES:
                problems.append(f"{alert}: severity not one of {sorted(SEVERITIES)}")
            notes = rule.get("annotations", {})
            if not notes.get("summary") or not notes.get("description"):
                problems.append(f"{alert}: summary and description are needed")
            try:
                expr = promql.parse(rule["expr"])
            except ValueError as exc:
                problems.append(f"{alert}: {exc}")
                continue
            if not (isinstance(expr, promql.BinaryExpr) and str(expr.op) in COMPARISONS):
                problems.append(f"{alert}: the expression is not a comparison")
            selectors: list[Any] = []

            def visit(node: Any, found: list[Any] = selectors) -> None:
                if isinstance(node, promql.VectorSelector):
                    found.append(node)

            promql.walk(expr, visit)
            for selector in selectors:
                if selector.name not in names:
                    problems.append(f"{alert}: no metric {selector.name}")
                    continue
                for matcher in selector.matchers.matchers:
                    if matcher.name not in names[selector.name] | TARGET_LABELS:
                        problems.append(f"{alert}: {selector.name} has no label {matcher.name}")
            carried = output_labels(expr, names)
            for text in notes.values():
                for label in re.findall(r"\$labels\.(\w+)", str(text)):
                    if label not in carried:
                        problems.append(f"{alert}: $labels.{label} is not in the result")
    return problems


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return loaded


def test_the_alert_rules_read_only_what_the_code_exports(rules: dict[str, Any]) -> None:
    assert rule_problems(rules) == []


def test_every_process_has_rules(rules: dict[str, Any]) -> None:
    groups = {g["name"]: g["rules"] for g in rules["groups"]}
    assert set(groups) == {"fraudstream-worker", "fraudstream-api", "fraudstream-quality"}
    exprs = " ".join(r["expr"] for g in groups.values() for r in g)
    for must in (
        "fraudstream_worker_live",
        "fraudstream_worker_dead_letters_total",
        "fraudstream_worker_batch_failures_total",
        "fraudstream_worker_state_writes_lost_total",
        "fraudstream_api_errors_total",
    ):
        assert must in exprs, must


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda r: r.update(expr="fraudstream_worker_lives == 0"), "no metric"),
        (
            lambda r: r.update(expr='fraudstream_worker_live{partition="1"} == 0'),
            "has no label partition",
        ),
        (lambda r: r.update(expr="sum(rate(fraudstream_worker_consumed_total[5m]) > 0"), "?"),
        (lambda r: r.update(expr="fraudstream_worker_live"), "not a comparison"),
        (lambda r: r.update(expr="sum(fraudstream_worker_live) == 0"), "$labels.instance"),
        (
            lambda r: r.update(
                expr="rate(fraudstream_worker_consumed_total[5m]) / on() "
                "sum(rate(fraudstream_worker_consumed_total[5m])) > 0"
            ),
            "$labels.instance",
        ),
        (lambda r: r["labels"].update(severity="page"), "severity"),
        (lambda r: r.update({"for": "1 minute"}), "bad duration"),
        (lambda r: r.update(alert="WorkerNotLive"), "FraudstreamCamelCase"),
    ],
)
def test_the_checks_catch_a_broken_rule(rules: dict[str, Any], change: Any, problem: str) -> None:
    broken = copy.deepcopy(rules)
    first = broken["groups"][0]["rules"][0]
    assert first["alert"] == "FraudstreamWorkerNotLive"
    change(first)
    found = rule_problems(broken)
    assert found and all(p.startswith(first["alert"]) for p in found), found
    if problem != "?":  # a syntax error: the parser's own words
        assert any(problem in p for p in found), found
