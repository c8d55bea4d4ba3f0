"""Fitting: optional frozen-base phase, fine-tuning phase, callbacks, checkpoints and resume."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from training.augment import build_augmentation
from training.batchnorm import RecalibrateBatchNorm
from training.callbacks import BatchDelay, CallbackStateBackup
from training.config import RunConfig
from training.data import Dataset
from training.errors import ResumeError
from training.models import (
    BASE_NAME,
    build_model,
    has_backbone,
    is_transfer,
    unfreeze,
    with_augmentation,
)
from training.pipeline import make_dataset

log = logging.getLogger(__name__)
STATE_FILE = "state.json"
FINAL_WEIGHTS = "final.weights.h5"
CONFIG_FILE = "config.json"
# Fields that must match for --resume to continue a run rather than mix two.
RESUME_KEYS = (
    ("data", "data_dir"),
    ("data", "image_size"),
    ("data", "seed"),
    ("model", "architecture"),
    ("model", "cnn_width"),
)


@dataclass
class FitResult:
    """The trained inference model (outside any strategy scope) and its per-epoch history."""

    model: keras.Model
    history: list[dict[str, float]]
    is_chief: bool
    phase1_epochs: int = 0  # epochs phase 1 ran (the rest of ``history`` is phase 2)


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ResumeError("--strategy multiworker needs the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _chief_and_id(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    return task_type == "chief" or (task_type == "worker" and task_id == 0), task_id


def prepare_work_dir(work: Path, cfg: RunConfig) -> None:
    """Fresh runs clear the work dir; --resume checks that it belongs to the same run."""
    saved = work / CONFIG_FILE
    if cfg.fit.resume and saved.exists():
        try:
            old = json.loads(saved.read_text())
            if not isinstance(old, dict):
                raise TypeError("not a JSON object")
        except (OSError, ValueError, TypeError) as exc:
            raise ResumeError(
                f"--resume: cannot read {saved} ({exc}); use another --work-dir or drop --resume"
            ) from exc
        new = cfg.to_dict()
        for section, key in RESUME_KEYS:
            if key == "cnn_width" and new["model"]["architecture"] != "cnn":
                continue  # Backbones ignore the width
            was = (old.get(section) or {}).get(key)
            if was != new[section][key]:
                raise ResumeError(
                    f"--resume: {work} was made with {section}.{key}={was!r}, "
                    f"not {new[section][key]!r}; use another --work-dir or drop --resume"
                )
        log.info("resuming the run in %s", work)
        return
    if work.exists() and any(work.iterdir()):
        if not saved.exists():
            raise ResumeError(
                f"--work-dir {work} is not empty and not a Visor work dir; refusing to clear it"
            )
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(cfg.to_dict(), indent=2))


def compile_model(model: keras.Model, lr: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )


def _callbacks(cfg: RunConfig, work: Path, own: Path, phase: str, best: float | None) -> list:
    fit = cfg.fit
    tracked = [
        keras.callbacks.ModelCheckpoint(
            str(work / f"best-{phase}.h5"),
            monitor=fit.monitor,
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best,
        ),
        keras.callbacks.EarlyStopping(monitor=fit.monitor, patience=fit.patience),
        keras.callbacks.ReduceLROnPlateau(
            monitor=fit.monitor, factor=0.5, patience=max(1, fit.patience // 2), min_lr=1e-6
        ),
    ]
    logs = [
        keras.callbacks.CSVLogger(str(own / "history.csv"), append=True),
        *_tensorboard(own),
        CallbackStateBackup(own / f"callbacks-{phase}.json", tracked),
        keras.callbacks.BackupAndRestore(str(work / f"backup-{phase}")),
    ]
    delay = float(os.environ.get("VISOR_TEST_BATCH_DELAY_S", "0"))
    return tracked + logs + ([BatchDelay(delay)] if delay > 0 else [])


def _tensorboard(own: Path) -> list[keras.callbacks.Callback]:
    # TensorFlow 2.21 no longer installs TensorBoard; tf.summary then raises at the first
    # epoch. Without the package, runs keep the CSV log and say so once.
    if importlib.util.find_spec("tensorboard") is None:
        log.warning("tensorboard is not installed: TensorBoard logs skipped (CSV log only)")
        return []
    return [
        keras.callbacks.TensorBoard(str(own / "tensorboard"), write_graph=False, profile_batch=0)
    ]


def _verbosity(quiet: bool) -> int:
    return 0 if quiet else (1 if sys.stdout.isatty() else 2)


def _read_state(own: Path) -> dict:
    return json.loads((own / STATE_FILE).read_text()) if (own / STATE_FILE).exists() else {}


def _best_value(own: Path, phase: str) -> float | None:
    path = own / f"callbacks-{phase}.json"
    if not path.exists():
        return None
    states = json.loads(path.read_text())
    last = states[max(states, key=int)] if states else None
    return last[0]["best"] if last else None


def _set_phase(model: keras.Model, phase: str, n_layers: int) -> None:
    """Put trainable flags in the phase's state.

    NOTE: HDF5 weight files list a layer's trainable weights first, so a file must be loaded
    with the same trainable flags it was saved with; every .h5 here records its phase.
    """
    if not has_backbone(model):
        return
    if phase == "phase1":
        model.get_layer(BASE_NAME).trainable = False
    else:
        unfreeze(model, n_layers)


def _load_as(fit_model, model, path: Path, saved_in: str, now: str, n_layers: int) -> None:
    _set_phase(model, saved_in, n_layers)
    fit_model.load_weights(str(path))
    _set_phase(model, now, n_layers)


def _run_phase(
    fit_model, model, cfg, work, own, phase, first, last, data, strategy, extra=()
) -> int:
    """Fit epochs ``first..last-1`` once per phase, end on its best weights; returns epochs done."""
    state, n = _read_state(own), cfg.model.fine_tune_layers
    if state.get(f"{phase}_done"):
        fit_model.load_weights(str(own / f"{phase}.weights.h5"))
        log.info("%s already finished (%d epochs); not repeated", phase, state[f"{phase}_epochs"])
        return state[f"{phase}_epochs"]
    best = _best_value(own, "phase1") if phase == "phase2" else None
    history = fit_model.fit(
        data[0],
        validation_data=data[1],
        initial_epoch=first,
        epochs=last,
        callbacks=_callbacks(cfg, work, own, phase, best) + list(extra),
        verbose=_verbosity(cfg.fit.quiet),
    )
    # After a restore, history holds only the epochs run by this process.
    reached = max(e + 1 for e in history.epoch) if history.epoch else last
    _barrier(strategy)  # the chief has written best-*.h5 before any worker reads it
    if (work / f"best-{phase}.h5").exists():
        fit_model.load_weights(str(work / f"best-{phase}.h5"))
    elif phase == "phase2":  # fine-tuning never beat phase 1: keep phase 1's best
        _load_as(fit_model, model, own / "phase1.weights.h5", "phase1", "phase2", n)
    fit_model.save_weights(str(own / f"{phase}.weights.h5"))
    state.update({f"{phase}_done": True, f"{phase}_epochs": reached})
    (own / STATE_FILE).write_text(json.dumps(state))
    return reached


def _barrier(strategy: tf.distribute.Strategy) -> None:
    """All workers wait here (a cross-worker all-reduce); a no-op without multiple workers."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)


def read_history(own: Path) -> list[dict[str, float]]:
    """Per-epoch rows of history.csv, one per epoch (a re-run epoch keeps its last row)."""
    path = own / "history.csv"
    if not path.exists():
        return []
    with path.open() as fh:
        rows = {
            int(r["epoch"]): {k: float(v) for k, v in r.items() if v != ""}
            for r in csv.DictReader(fh)
        }
    return [rows[e] for e in sorted(rows)]


def fit(cfg: RunConfig, ds: Dataset) -> FitResult:
    """Build, fit (``epochs=0`` skips fitting) and return the best inference model."""
    strategy = make_strategy(cfg.fit.strategy)
    chief, task_id = _chief_and_id(strategy)
    work = cfg.fit.work_dir
    # Non-chief workers keep their logs/state beside (not inside) the shared work dir, so the
    # chief can clear the work dir of a fresh run without racing them.
    own = work if chief else work.with_name(f"{work.name}.worker-{task_id}")
    prepare_work_dir(own, cfg)
    _barrier(strategy)  # the chief has cleared stale backups before any worker looks for them
    keras.utils.set_random_seed(cfg.fit.seed)
    size, channels = cfg.data.image_size, 1 if ds.color_mode == "grayscale" else 3
    with strategy.scope():
        model = build_model(cfg.model, len(ds.labels), size, channels)
        fit_model = with_augmentation(model, build_augmentation(cfg.augment, cfg.fit.seed))
        compile_model(fit_model, cfg.fit.learning_rate)
    method, batch = cfg.data.resize_method, cfg.fit.batch_size
    data = (
        make_dataset(
            ds.splits["train"], ds.color_mode, size, method, batch, shuffle_seed=cfg.fit.seed
        ),
        make_dataset(ds.splits["val"], ds.color_mode, size, method, batch),
    )
    phase1_epochs = 0
    if cfg.fit.epochs > 0:
        done = phase1_epochs = _run_phase(
            fit_model,
            model,
            cfg,
            work,
            own,
            "phase1",
            0,
            cfg.fit.epochs,
            data,
            strategy,
            _recalibration(cfg, model, data[0]),
        )
        if is_transfer(cfg.model) and cfg.fit.fine_tune_epochs > 0:
            with strategy.scope():
                unfreeze(model, cfg.model.fine_tune_layers)
                # Keras-io's recipe: a 10x lower learning rate once base layers can move.
                compile_model(fit_model, cfg.fit.learning_rate / 10)
            last = done + cfg.fit.fine_tune_epochs
            _run_phase(fit_model, model, cfg, work, own, "phase2", done, last, data, strategy)
    final = own / FINAL_WEIGHTS
    if is_transfer(cfg.model):
        _set_phase(model, "phase1", cfg.model.fine_tune_layers)  # the state a fresh build has
    fit_model.save_weights(str(final))
    return FitResult(_fresh_copy(cfg, ds, final), read_history(own), chief, phase1_epochs)


def load_fitted(cfg: RunConfig, ds: Dataset) -> FitResult:
    """The model a finished run left in ``cfg.fit.work_dir``, without fitting anything."""
    work = cfg.fit.work_dir
    if not (work / FINAL_WEIGHTS).is_file():
        raise ResumeError(
            f"{work} holds no finished run ({FINAL_WEIGHTS} is written when fitting ends): "
            "finish it with `train ... --resume`"
        )
    log.info("exporting the model fitted in %s (no fitting)", work)
    phase1 = int(_read_state(work).get("phase1_epochs", 0))
    return FitResult(_fresh_copy(cfg, ds, work / FINAL_WEIGHTS), read_history(work), True, phase1)


def _recalibration(cfg: RunConfig, model: keras.Model, train: tf.data.Dataset) -> list:
    """From-scratch backbones: true BatchNorm statistics before each validation (one device)."""
    if not has_backbone(model) or is_transfer(cfg.model) or cfg.fit.strategy != "none":
        return []
    return [RecalibrateBatchNorm(model, train)]


def _fresh_copy(cfg: RunConfig, ds: Dataset, weights: Path) -> keras.Model:
    """Rebuild outside the distribution strategy (plain variables) and load the trained weights."""
    channels = 1 if ds.color_mode == "grayscale" else 3
    # The same graph (and trainable flags) as fitted; load_weights overwrites every weight.
    model = build_model(cfg.model, len(ds.labels), cfg.data.image_size, channels, False)
    fit_model = with_augmentation(model, build_augmentation(cfg.augment, cfg.fit.seed))
    fit_model.load_weights(str(weights))
    return model
