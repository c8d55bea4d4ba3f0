"""The limit: raw ONNX Runtime throughput of one model, with the session options the server uses.

    python -m loadtests.raw_ort --version-dir models/digits/1 --batch-sizes 1,2,4,8,16,32,64

One ``InferenceSession`` built by ``service.backends.onnx.session_options`` (so the same graph
optimisation level and thread counts as a Visor worker, read from the same ``VISOR_`` settings),
fed float32 batches of the payload pixels in a tight loop, one batch size after the other. No
decoding, no copies beyond the float conversion done once up front. Prints one JSON object.

``--device cuda`` asks for the CUDA provider only and exits non-zero if ONNX Runtime does not
actually run on it (a silent CPU fallback would make every ratio meaningless).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def build_session(version_dir: Path, device: str):
    import onnxruntime as ort

    from service.backends.onnx import session_options
    from service.metadata import load_metadata
    from service.settings import Settings

    meta = load_metadata(version_dir)
    wanted = PROVIDERS[device]
    if device == "cuda":
        ort.preload_dlls()
    session = ort.InferenceSession(
        str(version_dir / meta.artifacts["onnx"].path),
        sess_options=session_options(Settings()),
        providers=[wanted],
    )
    active = session.get_providers()[0]
    if active != wanted:
        raise SystemExit(f"raw_ort: asked for {wanted} but ONNX Runtime runs on {active}")
    return session, meta


def measure(session, meta, pixels: np.ndarray, batch: int, seconds: float, min_runs: int) -> dict:
    idx = np.arange(batch) % len(pixels)
    x = np.ascontiguousarray(pixels[idx], dtype=np.float32)
    feed, outputs = {meta.input.name: x}, [meta.output.name]
    session.run(outputs, feed)  # warm this shape
    times = []
    start = time.perf_counter()
    cpu0 = time.process_time()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        session.run(outputs, feed)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > 4 * seconds and len(times) >= 2:
            break  # bounded: a very slow batch size never runs much past its share
    wall = time.perf_counter() - start
    lat = np.asarray(times) * 1e3
    return {
        "batch": batch,
        "runs": len(times),
        "images_per_s": batch * len(times) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "cpu_cores": (time.process_time() - cpu0) / wall,
    }


def run(
    version_dir: Path,
    pixels: np.ndarray,
    batches: list[int],
    seconds: float,
    device: str = "cpu",
    min_runs: int = 3,
) -> dict:
    session, meta = build_session(version_dir, device)
    points = [measure(session, meta, pixels, b, seconds, min_runs) for b in batches]
    best = max(points, key=lambda p: p["images_per_s"])
    return {
        "provider": session.get_providers()[0],
        "points": points,
        "best_images_per_s": best["images_per_s"],
        "best_batch": best["batch"],
        "batch1_p50_ms": next((p["p50_ms"] for p in points if p["batch"] == 1), None),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--version-dir", type=Path, required=True, help="models/NAME/VERSION")
    p.add_argument("--payloads", type=Path, help="payload folder (pixels.npy); default: random")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    p.add_argument("--seconds", type=float, default=3.0, help="time per batch size")
    p.add_argument("--device", choices=sorted(PROVIDERS), default="cpu")
    args = p.parse_args(argv)
    if args.payloads:
        pixels = np.load(args.payloads / "pixels.npy")
    else:
        meta = json.loads((args.version_dir / "metadata.json").read_text())["input"]
        shape = (8, meta["height"], meta["width"], meta["channels"])
        pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    json.dump(run(args.version_dir, pixels, batches, args.seconds, args.device), sys.stdout)
    print()


if __name__ == "__main__":
    main()
