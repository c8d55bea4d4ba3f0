"""Cross-fitted calibration data: out-of-fold predictions over train + val from k extra models.

A validation split of a few dozen images per class cannot certify a high precision (0.95 at 95 %
confidence needs 59 correct predictions and no error). Cross-fitting scores every train and val
image with a model that did not see it: the pool is split into k stratified folds, one model per
fold is fitted on the other k-1 folds for as many epochs as the published model's best checkpoint
took, at the learning rates that run logged, and predicts its own fold. The thresholds are then applied to the published model, which was
fitted on a pool of about the same size (train only); the test split is never touched.

Transfer learning keeps its backbone frozen in phase 1, so the fold models share it: the frozen
part runs once over the pool and each fold fits only the classifier head on those features, for
phase 1's epochs. Fine-tuning (phase 2) and augmentation are not replayed there: fine-tuning
would need the backbone run per epoch and fold, the cost this avoids, and features of augmented
images would have to be cached per epoch.

:func:`choose_folds` picks the method when ``--calibration-folds`` is auto: the validation split
when every class has enough validation images to certify the target (the support an error-free
class needs), cross-fitting otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import tf_keras as keras
from sklearn.model_selection import StratifiedKFold

from contract.calibration import needed_trials
from training.augment import build_augmentation
from training.batchnorm import RECALIBRATION_BATCHES, recalibrate
from training.config import RunConfig
from training.data import Dataset, Split
from training.models import (
    POOL_NAME,
    build_model,
    classifier_head,
    is_transfer,
    with_augmentation,
)
from training.pipeline import load_arrays, make_dataset
from training.train import FitResult, compile_model

log = logging.getLogger(__name__)
CACHE_FILE = "calibration-oof.npz"
AUTO_FOLDS = 5


@dataclass(frozen=True)
class FoldEpochs:
    """How each fold model trains: the published model's epochs up to its best checkpoint."""

    phase1: int
    phase2: int
    learning_rates: tuple[float, ...] = ()  # per epoch, as the published run's history logged

    def schedule(self) -> list[keras.callbacks.Callback]:
        """Replay the published run's learning rates (its plateau reductions included)."""
        if len(self.learning_rates) < self.phase1 + self.phase2:
            return []
        rates = self.learning_rates
        return [keras.callbacks.LearningRateScheduler(lambda epoch, _lr: rates[epoch])]


def fold_epochs(result: FitResult, monitor: str) -> FoldEpochs:
    """Epochs up to the published model's best ``monitor`` value, split into the two phases."""
    history = [row for row in result.history if monitor in row]
    if not history:
        return FoldEpochs(result.phase1_epochs, 0)
    values = np.asarray([row[monitor] for row in history])
    best = int(np.argmin(values) if "loss" in monitor else np.argmax(values))
    total = int(history[best]["epoch"]) + 1
    phase1 = min(total, result.phase1_epochs) if result.phase1_epochs else total
    rates = tuple(float(row["lr"]) for row in history[:total] if "lr" in row)
    return FoldEpochs(phase1, total - phase1, rates)


def pool(ds: Dataset) -> Split:
    """Train and val together: every image the calibration may use (never test)."""
    train, val = ds.splits["train"], ds.splits["val"]
    return Split(train.paths + val.paths, np.concatenate([train.labels, val.labels]))


def usable_folds(ds: Dataset, folds: int) -> int:
    """``folds``, or 0 when some class has fewer pooled images than folds (then: validation)."""
    if folds < 2:
        return 0
    counts = np.bincount(pool(ds).labels, minlength=len(ds.labels))
    return folds if counts.min() >= folds else 0


def choose_folds(cfg: RunConfig, ds: Dataset) -> tuple[int, str]:
    """Folds to cross-fit on (0: calibrate on the validation split) and why, in words."""
    c = cfg.calibration
    if cfg.fit.epochs == 0:
        return 0, "no fitted epochs to replay in fold models"
    if c.folds is not None:
        folds = usable_folds(ds, c.folds)
        if c.folds and not folds:
            log.warning("a class has fewer than %d train+val images: no cross-fitting", c.folds)
            return 0, f"a class has fewer train+val images than --calibration-folds {c.folds}"
        return folds, f"--calibration-folds {c.folds}"
    need = needed_trials(1.0, c.target, c.confidence)
    counts = np.bincount(ds.splits["val"].labels, minlength=len(ds.labels))
    fewest = int(np.argmin(counts))
    goal = f"certifying {c.policy} {c.target:g} at confidence {c.confidence:g}"
    if need is not None and counts[fewest] >= need:
        return 0, f"auto: every class has >= {need} validation images, enough for {goal}"
    why = (
        f"auto: class {ds.labels[fewest]!r} has {counts[fewest]} validation images; {goal} "
        f"takes at least {need} error-free ones"
    )
    folds = usable_folds(ds, AUTO_FOLDS)
    return folds, why if folds else f"{why}, and a class has fewer than {AUTO_FOLDS} train+val"


def _fit_fold(cfg: RunConfig, ds: Dataset, train: Split, epochs: FoldEpochs, seed: int):
    keras.utils.set_random_seed(seed)
    size, channels = cfg.data.image_size, 1 if ds.color_mode == "grayscale" else 3
    model = build_model(cfg.model, len(ds.labels), size, channels)
    fit_model = with_augmentation(model, build_augmentation(cfg.augment, seed))
    compile_model(fit_model, cfg.fit.learning_rate)
    data = make_dataset(
        train, ds.color_mode, size, cfg.data.resize_method, cfg.fit.batch_size, shuffle_seed=seed
    )
    # Only models fitted whole come here (transfer learning fits heads: _fit_head).
    fit_model.fit(data, epochs=epochs.phase1, callbacks=epochs.schedule(), verbose=0)
    if cfg.model.architecture != "cnn":
        recalibrate(model, data, RECALIBRATION_BATCHES)  # as the published model was
    return model


def out_of_fold(
    cfg: RunConfig, ds: Dataset, folds: int, result: FitResult
) -> tuple[np.ndarray, np.ndarray, str]:
    """(labels, probabilities, method in words) of every pooled image, each predicted by a model
    that never saw it.

    Kept in the work dir: ``--resume`` of a finished run and ``export`` reuse them instead of
    fitting the fold models again.
    """
    epochs = fold_epochs(result, cfg.fit.monitor)
    head_only = is_transfer(cfg.model)
    if head_only:
        epochs = FoldEpochs(epochs.phase1, 0, epochs.learning_rates[: epochs.phase1])
    method = describe(folds, len(pool(ds).labels), epochs, head_only)
    cache = cfg.fit.work_dir / CACHE_FILE
    key = np.asarray([folds, epochs.phase1, epochs.phase2, cfg.data.seed, cfg.fit.seed, head_only])
    if cfg.fit.resume and cache.exists():
        saved = np.load(cache)
        if np.array_equal(saved["key"], key) and np.array_equal(saved["labels"], pool(ds).labels):
            log.info("calibration: reusing the out-of-fold predictions in %s", cache)
            return saved["labels"], saved["probabilities"], method
    labels, probs = _fit_folds(cfg, ds, folds, epochs, head_only)
    np.savez(cache, key=key, labels=labels, probabilities=probs)
    return labels, probs, method


def _features(cfg: RunConfig, ds: Dataset, x: np.ndarray) -> np.ndarray:
    """The frozen part of a transfer model (preprocessing, backbone, pooling), run once."""
    channels = 1 if ds.color_mode == "grayscale" else 3
    model = build_model(cfg.model, len(ds.labels), cfg.data.image_size, channels)
    extractor = keras.Model(model.input, model.get_layer(POOL_NAME).output)
    log.info("calibration: backbone features of %d images, computed once", len(x))
    return extractor.predict(x, verbose=0, batch_size=64)


def _fit_head(cfg: RunConfig, ds: Dataset, x: np.ndarray, y: np.ndarray, epochs, seed: int):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(x.shape[1:], dtype="float32")
    head = keras.Model(inputs, classifier_head(inputs, len(ds.labels), cfg.model.dropout))
    compile_model(head, cfg.fit.learning_rate)
    head.fit(
        x,
        y,
        batch_size=cfg.fit.batch_size,
        epochs=epochs.phase1,
        callbacks=epochs.schedule(),
        shuffle=True,
        verbose=0,
    )
    return head


def _fit_folds(
    cfg: RunConfig, ds: Dataset, folds: int, epochs: FoldEpochs, head_only: bool
) -> tuple[np.ndarray, np.ndarray]:
    everything = pool(ds)
    x = load_arrays(everything, ds.color_mode, cfg.data.image_size, cfg.data.resize_method)
    if head_only:
        x = _features(cfg, ds, x)
    probs = np.zeros((len(everything.labels), len(ds.labels)), np.float32)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=cfg.data.seed)
    for k, (fit_idx, held_idx) in enumerate(splitter.split(x, everything.labels)):
        seed = cfg.fit.seed + 1 + k
        if head_only:
            model = _fit_head(cfg, ds, x[fit_idx], everything.labels[fit_idx], epochs, seed)
        else:
            train = Split([everything.paths[i] for i in fit_idx], everything.labels[fit_idx])
            model = _fit_fold(cfg, ds, train, epochs, seed)
        probs[held_idx] = model.predict(x[held_idx], verbose=0, batch_size=256)
        log.info("calibration fold %d/%d: %d images predicted", k + 1, folds, len(held_idx))
    return everything.labels, probs


def describe(folds: int, images: int, epochs: FoldEpochs, head_only: bool = False) -> str:
    """Thresholds.method, in words."""
    length = f"{epochs.phase1}" + (f"+{epochs.phase2}" if epochs.phase2 else "")
    what = "classifier heads on the frozen backbone's features" if head_only else "models"
    return (
        f"cross-fitted: out-of-fold predictions on {images} train+val images from {folds} extra "
        f"{what} ({folds}-fold, {length} epochs each)"
    )
