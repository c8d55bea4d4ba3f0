"""Test-split metrics with scikit-learn (TF-free: works on label ids and probabilities)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

from contract.metadata import ClassMetrics, Histogram, Reference, TestMetrics


def _roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    # AUC is undefined when the split holds only one of the two outcomes.
    return float(roc_auc_score(y_true, scores)) if 0 < y_true.sum() < len(y_true) else None


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> TestMetrics:
    """Accuracy, per-class P/R/F1/support/one-vs-rest ROC AUC, macro averages, confusion matrix."""
    classes = np.arange(len(labels))
    y_pred = probs.argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, average="macro", zero_division=0
    )
    aucs = [_roc_auc((y_true == c).astype(int), probs[:, c]) for c in classes]
    defined = [a for a in aucs if a is not None]
    per_class = {
        name: ClassMetrics(
            precision=float(p[c]),
            recall=float(r[c]),
            f1=float(f[c]),
            support=int(s[c]),
            roc_auc=aucs[c],
        )
        for c, name in enumerate(labels)
    }
    return TestMetrics(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_precision=float(mp),
        macro_recall=float(mr),
        macro_f1=float(mf),
        macro_roc_auc=float(np.mean(defined)) if defined else None,
        per_class=per_class,
        confusion_matrix=confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        samples=len(y_true),
    )


def pr_curves(y_true: np.ndarray, probs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per class (one-vs-rest): (precision, recall) arrays for plotting."""
    curves = []
    for c in range(probs.shape[1]):
        precision, recall, _ = precision_recall_curve((y_true == c).astype(int), probs[:, c])
        curves.append((precision, recall))
    return curves


def reference(probs: np.ndarray, labels: list[str], split: str, bins: int = 10) -> Reference:
    """What served traffic is compared with for drift: top-1 label shares and confidences."""
    top = probs.argmax(axis=1)
    shares = np.bincount(top, minlength=len(labels)) / max(len(top), 1)
    fractions, edges = np.histogram(probs.max(axis=1), bins=bins, range=(0.0, 1.0))
    return Reference(
        split=split,
        samples=len(probs),
        label_distribution={label: float(s) for label, s in zip(labels, shares, strict=True)},
        confidence=Histogram(
            edges=edges.tolist(), fractions=(fractions / max(len(probs), 1)).tolist()
        ),
    )
