"""The naive baseline: what most tutorials deploy. Flask, one `model.predict` per request.

    python -m loadtests.naive_server --version-dir models/digits/1 --port 5005

Loads the same trained Keras model (``model.h5``) that Visor exported, and serves
``POST /classify`` (multipart field ``image``, like Visor's) with a single-threaded Flask server:
decode with Pillow, resize, ``model.predict(x[None])``, JSON. No batching, no ONNX, no thread pool:
requests are handled one at a time. ``GET /health`` answers once the model is loaded.
Binds loopback only; it is a benchmark baseline, not a server to deploy.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path


def create_app(version_dir: Path):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tf_keras as keras
    from flask import Flask, jsonify, request
    from PIL import Image

    meta = json.loads((version_dir / "metadata.json").read_text())
    spec, labels = meta["input"], meta["labels"]
    mode = "L" if spec["channels"] == 1 else "RGB"
    size = (spec["width"], spec["height"])
    model = keras.models.load_model(version_dir / "model.h5", compile=False)
    app = Flask("naive")

    @app.get("/health")
    def health():
        return "ok"

    @app.post("/classify")
    def classify():
        image = Image.open(io.BytesIO(request.files["image"].read())).convert(mode).resize(size)
        x = np.asarray(image, dtype=np.float32).reshape(1, size[1], size[0], spec["channels"])
        probs = model.predict(x, verbose=0)[0]
        best = int(probs.argmax())
        return jsonify(label=labels[best], score=float(probs[best]), probabilities=probs.tolist())

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--version-dir", type=Path, required=True, help="models/NAME/VERSION")
    parser.add_argument("--port", type=int, default=5005)
    args = parser.parse_args(argv)
    app = create_app(args.version_dir)
    # NOTE: threaded=False is the point: one request at a time, as in the tutorials' handlers.
    app.run(host="127.0.0.1", port=args.port, threaded=False)


if __name__ == "__main__":
    main()
