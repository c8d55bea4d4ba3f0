"""Callbacks beyond Keras' own: persisted callback state for exact resume, and a test hook."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import tf_keras as keras

_STATEFUL = {
    keras.callbacks.EarlyStopping: ("wait", "best", "stopped_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter"),
    keras.callbacks.ModelCheckpoint: ("best",),
}


class CallbackStateBackup(keras.callbacks.Callback):
    """Saves EarlyStopping/ReduceLROnPlateau/ModelCheckpoint counters after every epoch and puts
    them back when a fit resumes, so ``--resume`` loses no patience, plateau or best-so-far state.

    NOTE: BackupAndRestore restores weights, optimizer and epoch but not other callbacks' state.
    Must come after those callbacks in the list (their on_train_begin resets the counters).
    """

    def __init__(self, path: Path, callbacks: list[keras.callbacks.Callback]) -> None:
        super().__init__()
        self.path = path
        self.tracked = [cb for cb in callbacks if type(cb) in _STATEFUL]
        self._restored = False

    def _read(self) -> dict[str, dict]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._restored:
            return
        self._restored = True
        state = self._read().get(str(epoch - 1))
        for cb, values in zip(self.tracked, state or [], strict=False):
            for attr, value in values.items():
                setattr(cb, attr, value)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        states = self._read()
        states[str(epoch)] = [
            {attr: float(getattr(cb, attr)) for attr in _STATEFUL[type(cb)]} for cb in self.tracked
        ]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(states))
        os.replace(tmp, self.path)


class BatchDelay(keras.callbacks.Callback):
    """Test hook: sleep after each training batch so a test can kill a run mid-epoch."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        time.sleep(self.seconds)
