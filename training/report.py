"""Report figures (matplotlib, Agg) and MODEL_CARD.md for one version folder."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay

from contract.metadata import ClassThreshold, ModelMetadata, Thresholds


def plot_history(history: list[dict[str, float]], path: Path) -> None:
    """Loss and accuracy per epoch, train and validation (an empty note when nothing was fitted)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [int(row["epoch"]) + 1 for row in history]
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix in ("", "val_"):
            values = [row.get(prefix + key) for row in history]
            if history and None not in values:
                ax.plot(epochs, values, marker=".", label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key if history else f"{key}: no epochs were fitted")
        ax.legend() if history else None
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(labels), 1 + 0.6 * len(labels)))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=labels).plot(ax=ax, colorbar=False)
    ax.set_title("test split (argmax)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _mark_bound(ax, ct, policy: str) -> None:
    """The certified level: precision's bound as a horizontal line, recall's as a vertical one."""
    if ct.lower_bound is None:
        return
    style = {"color": "tab:green" if ct.certified else "tab:red", "ls": "--", "lw": 1}
    text = f"{policy} bound {ct.lower_bound:.3f} ({'certified' if ct.certified else 'uncertified'})"
    if policy == "precision":
        ax.axhline(ct.lower_bound, label=text, **style)
    else:
        ax.axvline(ct.lower_bound, label=text, **style)


def plot_pr_curves(
    test_curves: list[tuple[np.ndarray, np.ndarray]], meta: ModelMetadata, path: Path
) -> None:
    """Test PR curve per class: the chosen threshold's calibration and test points, its bound."""
    t = meta.thresholds
    cols = min(4, len(meta.labels))
    rows = -(-len(meta.labels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3 * rows), squeeze=False)
    for ax, label, (precision, recall), ct in zip(
        axes.flat, meta.labels, test_curves, t.per_class, strict=False
    ):
        ax.plot(recall, precision, label="test PR")
        ax.plot(ct.val_recall, ct.val_precision, "o", label=f"calibration @ {ct.threshold:.3f}")
        if ct.test_recall is not None:
            ax.plot(ct.test_recall, ct.test_precision, "x", ms=9, label="test @ same")
        _mark_bound(ax, ct, t.policy)
        if t.target is not None:
            ax.plot([], [], " ", label=f"target {t.policy} {t.target:g}")
        ax.set(
            title=f"{label}{'' if ct.certified else ' (uncertified)'}",
            xlabel="recall",
            ylabel="precision",
            xlim=(0, 1.02),
            ylim=(0, 1.02),
        )
        ax.legend(fontsize=6, loc="lower left")
    for ax in list(axes.flat)[len(meta.labels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _threshold_lines(t: Thresholds) -> list[str]:
    """The per-class table and, when any class is uncertified, a warning in words."""
    confidence = f"{t.confidence:.0%}" if t.confidence else "n/a"
    lines = [
        f"## Thresholds: {t.policy} >= {t.target} certified at {confidence} confidence",
        "",
        f"Calibration: {t.method or 'not recorded'}.",
        "",
        (
            f"| label | threshold | certified | {t.policy} lower bound | support | calibration "
            "precision | calibration recall | test precision | test recall |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in t.per_class:
        lines.append(
            f"| {c.label} | {c.threshold:.4f} | {'yes' if c.certified else '**NO**'} "
            f"| {_num(c.lower_bound)} | {_num(c.support)} | {_num(c.val_precision)} "
            f"| {_num(c.val_recall)} | {_num(c.test_precision)} | {_num(c.test_recall)} |"
        )
    uncertified = [c for c in t.per_class if not c.certified]
    if uncertified:
        lines += [
            "",
            (
                f"**Warning: {len(uncertified)} of {len(t.per_class)} classes are NOT "
                f"certified** for {t.policy} >= {t.target}: their thresholds may not keep "
                "that promise on new images."
            ),
        ]
        lines += [f"- `{c.label}`: {_uncertified_reason(c, t)}" for c in uncertified]
    return lines


def _uncertified_reason(c: ClassThreshold, t: Thresholds) -> str:
    best = "n/a" if c.best_certified is None else f"{c.best_certified:.3f}"
    more = (
        f"about {c.needed} calibration images of this class would certify the target if its "
        "observed error rate held"
        if c.needed
        else "no threshold reaches the target even as a point estimate: more images will not help"
    )
    return f"the highest {t.policy} certifiable with this data is {best}; {more}."


def model_card(meta: ModelMetadata) -> str:
    """Markdown: summary, test metrics table, thresholds table with their bounds, parity figures."""
    m = meta.metrics
    lines = [
        f"# {meta.name} v{meta.version}",
        "",
        (
            f"Architecture `{meta.training.get('model', {}).get('architecture')}`, input "
            f"{meta.input.height}x{meta.input.width}x{meta.input.channels} ({meta.input.color_mode}, "
            f"{meta.input.resize_method}), {len(meta.labels)} classes, "
            f"created {meta.created:%Y-%m-%d %H:%M} UTC."
        ),
        "",
        (
            f"Test split ({m.samples} images): accuracy **{m.accuracy:.4f}**, macro precision "
            f"{m.macro_precision:.4f}, macro recall {m.macro_recall:.4f}, macro F1 {m.macro_f1:.4f}, "
            f"macro ROC AUC {m.macro_roc_auc if m.macro_roc_auc is None else round(m.macro_roc_auc, 4)}."
        ),
        "",
        "| label | precision | recall | F1 | ROC AUC | support |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, c in m.per_class.items():
        auc = "n/a" if c.roc_auc is None else f"{c.roc_auc:.4f}"
        lines.append(
            f"| {label} | {c.precision:.4f} | {c.recall:.4f} | {c.f1:.4f} | {auc} | {c.support} |"
        )
    lines += ["", *_threshold_lines(meta.thresholds)]
    parity = ", ".join(f"{k} {v:.2e}" for k, v in meta.parity.items())
    lines += ["", f"Export parity (max abs diff vs Keras): {parity}.", ""]
    if (check := meta.parity_check) is not None:
        agree = ", ".join(f"{k} {v:.0%}" for k, v in check.top1_agreement.items())
        lines[-1:] = [
            (
                f"Checked on {check.images} test images: every probability within "
                f"{check.atol:g} + {check.rtol:g} x p of Keras's, and the same top-1 label "
                f"outside near-ties (top-1 agreement: {agree})."
            ),
            "",
        ]
    return "\n".join(lines)


def write_report(folder: Path, meta: ModelMetadata, history: list[dict], test_curves: list) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    plot_history(history, folder / "training_curves.png")
    plot_confusion(meta.metrics.confusion_matrix, meta.labels, folder / "confusion_matrix.png")
    plot_pr_curves(test_curves, meta, folder / "pr_curves.png")
    (folder / "MODEL_CARD.md").write_text(model_card(meta))
