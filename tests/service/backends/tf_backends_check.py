"""Run in a subprocess by test_tensorflow.py: SavedModel and HDF5 backends vs ONNX on digits."""

import json
import sys
from pathlib import Path

import numpy as np

from contract.metadata import load_metadata
from service.backends import load_backend
from service.settings import Settings

version_dir = Path(sys.argv[1])
meta = load_metadata(version_dir)
settings = Settings(providers=["CPUExecutionProvider"], _env_file=None)
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (4, meta.input.height, meta.input.width, meta.input.channels)).astype(
    np.float32
)
onnx_probs = load_backend("onnx", version_dir, meta, settings).run(x)
report = {"tf_after_onnx": "tensorflow" in sys.modules}
for kind in ("savedmodel", "keras_h5"):
    backend = load_backend(kind, version_dir, meta, settings)
    report[kind] = {
        "diff": float(np.abs(backend.run(x) - onnx_probs).max()),
        "device": backend.device,
    }
print(json.dumps(report))
