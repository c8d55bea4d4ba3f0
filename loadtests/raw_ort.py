"""The limit: raw ONNX Runtime throughput of one model, with the session options the server uses.

    python -m loadtests.raw_ort --version-dir models/digits/1 --batch-sizes 1,2,4,8,16,32,64

One ``InferenceSession`` built by ``service.backends.onnx.session_options`` (so the same graph
optimisation level and thread counts as a Visor worker, read from the same ``VISOR_`` settings),
fed float32 batches of the payload pixels in a tight loop. The sweep over batch sizes runs in
``--rounds`` interleaved passes and each batch size reports the median of its slices, so a few
lucky seconds on a shared machine do not set the limit. No decoding, no copies beyond the float
conversion done once up front. Prints one JSON object.

``--device cuda`` asks for the CUDA provider only and exits non-zero if ONNX Runtime does not
actually run on it (a silent CPU fallback would make every ratio meaningless).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def build_session(version_dir: Path, device: str, spinning: bool | None = None, batches: int = 1):
    import onnxruntime as ort

    from contract.metadata import load_metadata
    from service.backends.onnx import session_options
    from service.settings import Settings

    meta = load_metadata(version_dir)
    wanted = PROVIDERS[device]
    if device == "cuda":
        ort.preload_dlls()
    session = ort.InferenceSession(
        str(version_dir / meta.artifacts["onnx"].path),
        sess_options=session_options(Settings(), spinning, batches),
        providers=[wanted],
    )
    active = session.get_providers()[0]
    if active != wanted:
        raise SystemExit(f"raw_ort: asked for {wanted} but ONNX Runtime runs on {active}")
    return session, meta


def measure(
    session, meta, pixels: np.ndarray, batch: int, seconds: float, min_runs: int, callers: int = 1
) -> dict:
    """One slice: ``callers`` threads each running ``batch``-sized runs back to back."""
    idx = np.arange(batch) % len(pixels)
    x = np.ascontiguousarray(pixels[idx], dtype=np.float32)
    feed, outputs = {meta.input.name: x}, [meta.output.name]
    session.run(outputs, feed)  # warm this shape
    times: list[float] = []  # NOTE: list.append is atomic; session.run releases the GIL
    start = time.perf_counter()
    cpu0 = time.process_time()

    def loop() -> None:
        mine = 0
        while mine < min_runs or time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            session.run(outputs, feed)
            times.append(time.perf_counter() - t0)
            mine += 1
            if time.perf_counter() - start > 4 * seconds and mine >= 2:
                break  # bounded: a very slow batch size never runs much past its share

    threads = [threading.Thread(target=loop) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "images_per_s": batch * len(times) / wall,
        "times": times,
        "cpu_cores": (time.process_time() - cpu0) / wall,
    }


def summarise(batch: int, slices: list[dict]) -> dict:
    """A batch size's figure: the median of its slices' throughputs, latencies pooled."""
    rates = [s["images_per_s"] for s in slices]
    lat = np.asarray([t for s in slices for t in s["times"]]) * 1e3
    return {
        "batch": batch,
        "runs": int(lat.size),
        "images_per_s": float(np.median(rates)),
        "images_per_s_slices": [round(r, 2) for r in rates],
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "cpu_cores": float(np.median([s["cpu_cores"] for s in slices])),
    }


def run(
    version_dir: Path,
    pixels: np.ndarray,
    batches: list[int],
    seconds: float,
    device: str = "cpu",
    min_runs: int = 3,
    rounds: int = 3,
) -> dict:
    # NOTE: the cores are shared, so one long slice per batch size measures whatever else ran
    # in those seconds, and "the best batch size" of one sweep is mostly the luckiest slice.
    # The sweep is split into ``rounds`` interleaved passes; each batch size reports the median
    # of its slices, and the best batch size is chosen on those medians.
    from service.backends.onnx import lone_session_wanted
    from service.settings import Settings

    settings = Settings()
    # NOTE: the limit is the best this machine gets from the model, so a batch size counts the
    # better of two layouts: ORT's own (one caller, a thread per core) and the server's. On the
    # CPU the server runs a lone single image on a spinning session with every core, and other
    # batches on a main session whose threads are split between the inference_threads batches
    # that may run at once (service.backends.onnx) - here, that many callers side by side.
    session, meta = build_session(version_dir, device)
    layouts = [(session, 1)]
    lone = session
    if lone_session_wanted(settings, [PROVIDERS[device]]):
        lone = build_session(version_dir, device, spinning=True)[0]
        callers = settings.inference_threads
        main = build_session(version_dir, device, batches=callers)[0]
        layouts.append((main, callers))
    rounds = max(1, rounds)
    slices: dict[int, list[dict]] = {b: [] for b in batches}
    for _ in range(rounds):
        for b in batches:
            if b == 1:
                slices[b].append(measure(lone, meta, pixels, b, seconds / rounds, min_runs))
                continue
            tries = [
                measure(s, meta, pixels, b, seconds / rounds / len(layouts), min_runs, n)
                for s, n in layouts
            ]
            slices[b].append(max(tries, key=lambda t: t["images_per_s"]))
    points = [summarise(b, slices[b]) for b in batches]
    best = max(points, key=lambda p: p["images_per_s"])
    return {
        "provider": session.get_providers()[0],
        "rounds": rounds,
        "points": points,
        "best_images_per_s": best["images_per_s"],
        "best_batch": best["batch"],
        "best_single_slice_images_per_s": max(max(p["images_per_s_slices"]) for p in points),
        "batch1_p50_ms": next((p["p50_ms"] for p in points if p["batch"] == 1), None),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--version-dir", type=Path, required=True, help="models/NAME/VERSION")
    p.add_argument("--payloads", type=Path, help="payload folder (pixels.npy); default: random")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    p.add_argument("--seconds", type=float, default=3.0, help="time per batch size, all rounds")
    p.add_argument(
        "--rounds", type=int, default=3, help="interleaved passes; a batch size's median counts"
    )
    p.add_argument("--device", choices=sorted(PROVIDERS), default="cpu")
    args = p.parse_args(argv)
    if args.payloads:
        pixels = np.load(args.payloads / "pixels.npy")
    else:
        meta = json.loads((args.version_dir / "metadata.json").read_text())["input"]
        shape = (8, meta["height"], meta["width"], meta["channels"])
        pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    json.dump(
        run(args.version_dir, pixels, batches, args.seconds, args.device, rounds=args.rounds),
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
