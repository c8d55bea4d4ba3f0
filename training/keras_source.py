"""Read a user's Keras 2 model (.h5, .keras or a SavedModel folder) with tf-keras, or say why not.

A file written by Keras 3 records its version (an .h5 in the root attribute ``keras_version``, a
.keras zip in ``metadata.json``); tf-keras cannot deserialise it, so ``import`` reads such files
with Keras 3 instead (training/keras3_source.py) and only Keras 2 files come here.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import tf_keras as keras

from training.errors import ImportModelError


def saved_keras_version(path: Path) -> str | None:
    """The Keras version that wrote ``path`` when the file records it (.h5 / .keras)."""
    if path.suffix == ".keras" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "metadata.json" in archive.namelist():
                return str(json.loads(archive.read("metadata.json")).get("keras_version", ""))
        return None
    if path.suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as h5:
            value = h5.attrs.get("keras_version")
        return value.decode() if isinstance(value, bytes) else value
    return None


def source_format(path: Path) -> str:
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ImportModelError(f"{path} is a folder without saved_model.pb: not a SavedModel")
        return "savedmodel"
    if path.suffix in (".h5", ".hdf5"):
        return "h5"
    if path.suffix == ".keras":
        return "keras"
    raise ImportModelError(
        f"{path}: unsupported model file {path.suffix or '(no suffix)'}; give a .keras or .h5 "
        "file or a SavedModel folder"
    )


def load_keras_model(path: Path) -> tuple[keras.Model, dict[str, str]]:
    """The model and what was read: format and the Keras version that saved it."""
    if not path.exists():
        raise ImportModelError(f"{path} does not exist")
    fmt = source_format(path)
    version = saved_keras_version(path) if fmt != "savedmodel" else None
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is reported in one line
        # The first sentence says what failed; the rest is a page of model config
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0].split('. ')[0][:160]}"
        raise ImportModelError(f"{path} could not be loaded with tf-keras ({reason})") from None
    if not isinstance(model, keras.Model):
        raise ImportModelError(
            f"{path} is a SavedModel without Keras metadata (e.g. written by tf.saved_model.save "
            "or Keras 3 model.export); import the Keras model it came from instead"
        )
    return model, {"format": fmt, "keras_version": version or ""}
