"""Visor training: class-folder images -> fitted, evaluated, calibrated, exported model versions.

Run ``python -m training --help``. Importing this package sets ``TF_USE_LEGACY_KERAS=1`` so that
TensorFlow (imported lazily by the modules that need it) exposes Keras 2 (tf-keras).
"""

import os

# Must happen before TensorFlow is first imported anywhere in the process.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
