"""The evaluation report of a training run: PR curve and CP@k plots (PNG) and a summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from fraudstream.schema import LABEL_COLUMN
from training.evaluate import card_precision_at_k


def _pr_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-score, kind="mergesort")
    tp = np.cumsum(y[order])
    precision = tp / np.arange(1, len(y) + 1)
    recall = tp / max(1, y.sum())
    return recall, precision


def write_report(
    out: Path,
    test_df: pd.DataFrame,
    test_scores: np.ndarray,
    metrics: dict[str, Any],
    oof_scores: np.ndarray,
    y_train: np.ndarray,
    thresholds: dict[str, Any],
) -> dict[str, Path]:
    """Write ``pr_curve.png``, ``cp_at_k.png`` and ``evaluation.json`` into ``out``."""
    y = test_df[LABEL_COLUMN].to_numpy()
    files: dict[str, Path] = {}

    fig, ax = plt.subplots(figsize=(5, 4))
    recall, precision = _pr_curve(y, test_scores)
    ax.plot(recall, precision, label=f"test (AP {metrics['average_precision']:.3f})")
    r2, p2 = _pr_curve(y_train, oof_scores)
    ax.plot(r2, p2, label="training week, out of fold", alpha=0.6)
    ax.set(
        xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02)
    )
    ax.legend(loc="lower left")
    fig.tight_layout()
    files["pr_curve.png"] = out / "pr_curve.png"
    fig.savefig(files["pr_curve.png"], dpi=100)
    plt.close(fig)

    ks = [10, 25, 50, 100, 200, 400]
    cps = [card_precision_at_k(test_df, test_scores, k)[0] for k in ks]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(ks, cps, marker="o")
    ax.set(xlabel="k (cards per day)", ylabel="card precision@k", title="Card precision@k (test)")
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    files["cp_at_k.png"] = out / "cp_at_k.png"
    fig.savefig(files["cp_at_k.png"], dpi=100)
    plt.close(fig)

    summary = {
        "metrics": metrics,
        "card_precision_at_k": dict(zip(map(str, ks), cps, strict=True)),
        "thresholds": thresholds,
    }
    files["evaluation.json"] = out / "evaluation.json"
    files["evaluation.json"].write_text(json.dumps(summary, indent=2, default=float))
    return files
