"""One training run end to end: data -> fit -> evaluate -> calibrate -> export -> publish."""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contract.metadata import ModelMetadata, ParityCheck, TestMetrics, Thresholds
from training.calibrate import calibrate, with_test_results
from training.config import RunConfig
from training.data import Dataset, load_dataset
from training.errors import ParityFailed
from training.evaluate import compute_metrics, pr_curves, reference
from training.flags import given_flags
from training.gate import PublishRefused, check_publishable
from training.weights import resolve_weights

if TYPE_CHECKING:
    from training.train import FitResult

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run published (None on non-chief workers, which do not export)."""

    version_dir: Path | None
    metrics: TestMetrics | None
    seconds: float


def _summary(ds: Dataset) -> dict:
    return {
        "labels": ds.labels,
        "color_mode": ds.color_mode,
        "split_sizes": {name: len(s.paths) for name, s in ds.splits.items()},
        "skipped_files": [f"{path}: {reason}" for path, reason in ds.skipped],
    }


def run_training(cfg: RunConfig) -> RunResult:
    """Train and publish ``cfg.export.out_dir/NAME/<next version>/``."""
    started = time.monotonic()
    resolve_weights(cfg.model, cfg.data.image_size)  # Fail on missing weights before any work
    ds = _load_data(cfg)
    # TensorFlow loads only now, so bad data and missing weights fail in a second.
    from training.train import fit

    result = fit(cfg, ds)
    if not result.is_chief:
        log.info("worker finished fitting; the chief evaluates and exports")
        return RunResult(None, None, time.monotonic() - started)
    return _evaluate_and_publish(cfg, ds, result, started)


def run_export(cfg: RunConfig) -> RunResult:
    """Evaluate, calibrate, export and publish the model a finished run left in its work dir."""
    started = time.monotonic()
    ds = _load_data(cfg)
    from training.train import load_fitted

    return _evaluate_and_publish(cfg, ds, load_fitted(cfg, ds), started)


def _load_data(cfg: RunConfig) -> Dataset:
    if isinstance(cfg.export.out_dir, str):
        from training.publish_remote import check_writable

        check_writable(cfg.export.out_dir)  # refused credentials fail now, not after fitting
    ds = load_dataset(cfg.data)
    log.info(
        "data: %s", _summary(ds)["split_sizes"] | {"labels": len(ds.labels), "mode": ds.color_mode}
    )
    return ds


def export_command(cfg: RunConfig, **overrides: Any) -> str:
    """The command that exports the model in ``cfg``'s work dir again, without fitting, with
    ``cfg``'s export and calibration settings (``overrides`` replace some)."""
    words = ["python", "-m", "training", "export", "--work-dir", str(cfg.fit.work_dir)]
    words += given_flags(cfg.export, **overrides) + given_flags(cfg.calibration, **overrides)
    return shlex.join(words)


def _evaluate_and_publish(
    cfg: RunConfig, ds: Dataset, result: FitResult, started: float
) -> RunResult:
    """A fitted model's evaluation, gate, calibration and publish; a refusal says how to retry."""
    try:
        return _publish_fitted(cfg, ds, result, started)
    except PublishRefused as exc:
        again = export_command(cfg, min_test_accuracy=0.0)
        raise PublishRefused(
            f"{exc} The trained model is kept in {cfg.fit.work_dir}: to publish it anyway without "
            f"fitting again, run: {again}"
        ) from exc
    except ParityFailed as exc:
        rtol = exc.suggested_rtol
        why = (
            f"this batch passes at --parity-rtol {rtol:g}; loosen the tolerance only if the "
            "artifacts differ by rounding, not by a conversion error"
            if rtol is not None
            else "a top-1 label changed: a conversion error, not rounding; fix it first"
        )
        raise ParityFailed(
            f"{exc}. Nothing was published; the trained model is kept in {cfg.fit.work_dir} "
            f"({why}). To export it again without fitting, run: "
            + export_command(cfg, parity_rtol=rtol or cfg.export.parity_rtol),
            rtol,
        ) from exc


def _publish_fitted(cfg: RunConfig, ds: Dataset, result: FitResult, started: float) -> RunResult:
    from training.export import (
        checksums,
        created_now,
        export_golden,
        framework_versions,
        io_specs,
        publish,
        verify_parity,
        write_artifacts,
    )
    from training.pipeline import load_arrays
    from training.report import write_report

    model, size, method = result.model, cfg.data.image_size, cfg.data.resize_method
    x_val = load_arrays(ds.splits["val"], ds.color_mode, size, method)
    x_test = load_arrays(ds.splits["test"], ds.color_mode, size, method)
    y_val, y_test = ds.splits["val"].labels, ds.splits["test"].labels
    probs_val = model.predict(x_val, verbose=0, batch_size=256)
    probs_test = model.predict(x_test, verbose=0, batch_size=256)
    metrics = compute_metrics(y_test, probs_test, ds.labels)
    log.info(
        "test accuracy %.4f, macro F1 %.4f on %d images",
        metrics.accuracy,
        metrics.macro_f1,
        metrics.samples,
    )
    check_publishable(metrics, y_test, len(ds.labels), cfg.export.min_test_accuracy)
    thresholds = with_test_results(
        _calibrate(cfg, ds, result, y_val, probs_val), y_test, probs_test
    )
    parity: dict[str, float] = {}
    checks: list[ParityCheck] = []
    golden: list = []

    def fill(tmp: Path) -> None:
        write_artifacts(model, tmp, cfg.export.opset)
        batch = x_test[: cfg.export.parity_batch]
        diffs, check = verify_parity(model, tmp, batch, cfg.export.parity_tolerance)
        parity.update(diffs)
        checks.append(check)
        golden.append(export_golden(tmp, batch))

    def finish(tmp: Path, version: int) -> ModelMetadata:
        input_spec, output_spec = io_specs(tmp, model, ds.color_mode, method)
        meta = ModelMetadata(
            name=cfg.export.name,
            version=version,
            created=created_now(),
            labels=ds.labels,
            input=input_spec,
            output=output_spec,
            thresholds=thresholds,
            metrics=metrics,
            artifacts=checksums(tmp),
            onnx_opset=cfg.export.opset,
            parity=parity,
            parity_check=checks[0],
            golden=golden[0],
            reference=reference(probs_val, ds.labels, "validation"),
            frameworks=framework_versions(),
            training=cfg.to_dict() | {"dataset": _summary(ds), "history": result.history},
        )
        write_report(tmp / "report", meta, result.history, pr_curves(y_test, probs_test))
        return meta

    version_dir = publish(cfg.export, fill, finish)
    _log_thresholds(thresholds)
    return RunResult(version_dir, metrics, time.monotonic() - started)


def _calibrate(
    cfg: RunConfig, ds: Dataset, result: FitResult, y_val: np.ndarray, probs_val: np.ndarray
) -> Thresholds:
    """Thresholds from cross-fitted predictions or the validation split (crossfit.choose_folds)."""
    from training import crossfit

    c = cfg.calibration
    folds, why = crossfit.choose_folds(cfg, ds)
    log.info("calibration: %s", why)
    if folds:
        y_cal, probs_cal, method = crossfit.out_of_fold(cfg, ds, folds, result)
    else:
        y_cal, probs_cal = y_val, probs_val
        method = f"validation split ({len(y_val)} images)"
    return calibrate(
        y_cal, probs_cal, ds.labels, c.policy, c.target, c.confidence, f"{method}; {why}"
    )


def _log_thresholds(thresholds: Thresholds) -> None:
    uncertified = [c.label for c in thresholds.per_class if not c.certified]
    log.info(
        "thresholds: %s >= %s certified at confidence %s for %d/%d classes%s",
        thresholds.policy,
        thresholds.target,
        thresholds.confidence,
        len(thresholds.per_class) - len(uncertified),
        len(thresholds.per_class),
        f" (uncertified: {uncertified})" if uncertified else "",
    )
