"""Import TensorFlow on demand, with Keras 2 (tf-keras) as the project requires."""

from __future__ import annotations

import os
from types import ModuleType


def import_tensorflow() -> ModuleType:
    # Must be set before the first TensorFlow import, or tf.keras would be Keras 3.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf
