"""Model quality and training time on the handbook dataset, and Feast vs a DuckDB ASOF join.

    .venv/bin/python benchmarks/model_quality.py [--data PATH] [--weeks 2018-07-04,...] [--all-rows]

Starts a private local stack (Redis for Feast) and a private copy of the feature repo,
then, in one run:

1. the handbook protocol (train from 2018-07-25): the full ``train`` pipeline, timed by
   stage (read, backfill, Feast training set, fit, evaluate), with its test metrics;
2. the same for each weekly window in ``--weeks`` (mean ± std of the metrics);
3. the training-set build for the protocol's rows through Feast ``get_historical_features``
   and through the DuckDB ASOF join generated from the Feast registry, side by side, checked
   equal; with ``--all-rows`` also for every transaction of the dataset.

Prints a Markdown summary and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from workspace import private_workspace

from fraudstream import stack
from fraudstream.config import Settings
from fraudstream.feast_env import open_store, run_feast
from fraudstream.features import MODEL_FEATURES
from fraudstream.schema import read_transactions
from training.backfill import backfill
from training.dataset import asof_features, historical_features
from training.evaluate import Split, train_test_split
from training.train import train

ROOT = Path(__file__).resolve().parent.parent
HANDBOOK = ROOT.parent / "shared" / "datasets" / "fraud-handbook" / "transactions.parquet"
METRICS = ("auc_roc", "average_precision", "card_precision_at_100")


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=HANDBOOK)
    parser.add_argument("--protocol-start", default="2018-07-25")
    parser.add_argument("--weeks", default="2018-07-04,2018-07-11,2018-07-18,2018-07-25,2018-08-01")
    parser.add_argument(
        "--all-rows", action="store_true", help="also time Feast vs ASOF on every row"
    )
    parser.add_argument("--ablation", action="store_true", help="feature families x parameters")
    parser.add_argument("--validation-weeks", default="2018-06-20,2018-06-27,2018-07-04,2018-07-11")
    parser.add_argument(
        "--only-retrieval", action="store_true", help="skip training; time the retrieval only"
    )
    parser.add_argument(
        "--ttl-days",
        type=int,
        default=0,
        help="also re-apply the views with this TTL and time Feast again (TTL drives its cost)",
    )
    args = parser.parse_args()

    with private_workspace() as ws:
        results = run(args, ws.settings, ws.endpoints, ws.work)
    print(json.dumps(results, default=float))


def run(
    args: argparse.Namespace, settings: Settings, endpoints: stack.Endpoints, work: Path
) -> dict:
    events, read_s = timed(read_transactions, args.data)
    backfill(events, settings.feast.repo_path)
    assert run_feast(settings, endpoints, ["apply"]) == 0
    store = open_store(settings, endpoints)

    protocol = Split(date.fromisoformat(args.protocol_start))
    timings: dict = {}
    protocol_metrics: dict = {}
    weekly: dict = {}
    summary: dict = {}
    if not args.only_retrieval:
        result, wall_s = timed(train, events, protocol, work / "model", store)
        timings = {"read_validate_s": read_s, **result.timings, "train_call_wall_s": wall_s}
        timings["pipeline_s"] = read_s + wall_s
        protocol_metrics = {k: result.metrics[k] for k in METRICS}
        for start in [s for s in args.weeks.split(",") if s]:
            r = train(
                events,
                Split(date.fromisoformat(start)),
                work / f"m-{start}",
                store,
                backfill_first=False,
            )
            weekly[start] = {k: r.metrics[k] for k in METRICS}
        summary = {
            k: {
                "mean": statistics.fmean(w[k] for w in weekly.values()),
                "std": statistics.stdev([w[k] for w in weekly.values()])
                if len(weekly) > 1
                else 0.0,
            }
            for k in METRICS
        }

    train_df, test_df = train_test_split(events, protocol)
    rows = pd.concat([train_df, test_df], ignore_index=True)
    retrieval = {"protocol_rows": compare(store, rows)}
    if args.all_rows:
        retrieval["all_rows"] = compare(store, events)
    if args.ttl_days:
        definitions = settings.feast.repo_path / "definitions.py"
        text = definitions.read_text()
        definitions.write_text(
            text.replace("ttl=timedelta(days=1)", f"ttl=timedelta(days={args.ttl_days})")
        )
        assert run_feast(settings, endpoints, ["apply"]) == 0
        store = open_store(settings, endpoints)
        retrieval[f"protocol_rows_ttl_{args.ttl_days}d"] = compare(store, rows)
        definitions.write_text(text)

    ablation = run_ablation(args, store, events) if args.ablation else None

    out = {
        "ablation": ablation,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}, "
        f"{len(__import__('os').sched_getaffinity(0))} cores",
        "protocol": {"train_start": args.protocol_start, **protocol_metrics},
        "timings": timings,
        "weekly": weekly,
        "weekly_summary": summary,
        "retrieval": retrieval,
    }
    print_markdown(out)
    return out


FAMILIES = {
    "handbook (16)": [],
    "+ terminal fraud run": [
        "terminal_last_known_fraud",
        "terminal_fraud_run_len",
        "terminal_fraud_run_age_d",
    ],
    "+ amount vs earlier means": [
        "amount_to_prev_avg_30d",
        "amount_to_prev_avg_60d",
        "amount_to_prev_avg_120d",
    ],
    "+ earlier large amounts": ["customer_nb_big_prev_14d"],
}
DEFAULT_PARAMS = {
    "objective": "binary:logistic",
    "tree_method": "exact",
    "seed": 0,
    "num_boost_round": 100,
}


def run_ablation(args: argparse.Namespace, store, events: pd.DataFrame) -> list[dict]:  # type: ignore[no-untyped-def]
    """Cumulative feature families, default vs tuned parameters: validation mean and test."""
    import xgboost as xgb

    from fraudstream.features import ALL_FEATURES, HANDBOOK_FEATURES
    from training.dataset import as_matrix
    from training.evaluate import evaluate
    from training.train import NUM_BOOST_ROUND, XGB_PARAMS

    tuned = {**XGB_PARAMS, "num_boost_round": NUM_BOOST_ROUND}
    splits = {s: "validation" for s in args.validation_weeks.split(",")} | {
        args.protocol_start: "test"
    }
    everything = [
        f for f in ALL_FEATURES.values() if f.name in {n for fam in FAMILIES.values() for n in fam}
    ]
    prepared = {}
    for start in splits:
        train_df, test_df = train_test_split(events, Split(date.fromisoformat(start)))
        rows = pd.concat([train_df, test_df], ignore_index=True)
        matrix = asof_features(store, rows, HANDBOOK_FEATURES + everything)
        prepared[start] = (matrix, len(train_df), train_df, test_df)
    out = []
    names: list[str] = [f.name for f in HANDBOOK_FEATURES]
    for family, extra in FAMILIES.items():
        names = names + extra
        for label, params in (("default", DEFAULT_PARAMS), ("tuned", tuned)):
            scores: dict[str, dict] = {}
            for start, (matrix, n_train, train_df, test_df) in prepared.items():
                x = as_matrix(matrix[names])
                p = dict(params)
                rounds = int(p.pop("num_boost_round"))
                booster = xgb.train(
                    {**p, "nthread": 2},
                    xgb.DMatrix(x[:n_train], label=train_df["is_fraud"].to_numpy()),
                    rounds,
                )
                scores[start] = evaluate(test_df, booster.inplace_predict(x[n_train:]))
            val = [scores[s] for s, kind in splits.items() if kind == "validation"]
            row = {
                "features": family,
                "params": label,
                **{f"val_{k}": statistics.fmean(v[k] for v in val) for k in METRICS},
                **{f"test_{k}": scores[args.protocol_start][k] for k in METRICS},
            }
            out.append(row)
            print(row, flush=True)
    return out


def compare(store, rows: pd.DataFrame) -> dict:  # type: ignore[no-untyped-def]
    feast_rows, feast_s = timed(historical_features, store, rows, MODEL_FEATURES)
    asof_rows, asof_s = timed(asof_features, store, rows, MODEL_FEATURES)
    equal = bool(
        np.allclose(
            feast_rows.to_numpy(float),
            asof_rows.to_numpy(float),
            rtol=0,
            atol=1e-12,
            equal_nan=True,
        )
    )
    return {
        "rows": len(rows),
        "feast_s": feast_s,
        "asof_s": asof_s,
        "ratio": feast_s / asof_s,
        "equal": equal,
    }


def print_markdown(out: dict) -> None:
    if not out["weekly"]:
        print_retrieval(out)
        return
    if out.get("ablation"):
        print(
            "\n| features | params | validation AUC / AP / CP@100 | test AUC / AP / CP@100 |\n|---|---|---|---|"
        )
        for r in out["ablation"]:
            val = " / ".join(f"{r['val_' + k]:.4f}" for k in METRICS)
            test = " / ".join(f"{r['test_' + k]:.4f}" for k in METRICS)
            print(f"| {r['features']} | {r['params']} | {val} | {test} |")
    p = out["protocol"]
    print(
        f"\nHandbook protocol (train from {p['train_start']}): "
        f"AUC ROC {p['auc_roc']:.4f}, AP {p['average_precision']:.4f}, CP@100 {p['card_precision_at_100']:.4f}"
    )
    print("\n| stage | seconds |\n|---|---|")
    for k, v in out["timings"].items():
        print(f"| {k} | {v:.1f} |")
    print("\n| train start | AUC ROC | AP | CP@100 |\n|---|---|---|---|")
    for start, m in out["weekly"].items():
        print(
            f"| {start} | {m['auc_roc']:.4f} | {m['average_precision']:.4f} | {m['card_precision_at_100']:.4f} |"
        )
    s = out["weekly_summary"]
    print(
        "| mean ± std | "
        + " | ".join(f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in METRICS)
        + " |"
    )
    print_retrieval(out)


def print_retrieval(out: dict) -> None:
    print(
        "\n| case | rows | Feast get_historical_features (s) | DuckDB ASOF (s) | ratio | equal |"
        "\n|---|---|---|---|---|---|"
    )
    for name, r in out["retrieval"].items():
        print(
            f"| {name} | {r['rows']:,} | {r['feast_s']:.2f} | {r['asof_s']:.2f} | {r['ratio']:.1f}× | {r['equal']} |"
        )


if __name__ == "__main__":
    main()
