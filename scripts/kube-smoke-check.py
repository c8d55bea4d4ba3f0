"""The client side of scripts/kube-smoke.sh: probes, both wires, and a publish under load.

    python scripts/kube-smoke-check.py probes MANIFEST
    python scripts/kube-smoke-check.py wires HTTP_PORT GRPC_PORT KEY PNG
    python scripts/kube-smoke-check.py publish HTTP_PORT GRPC_PORT KEY PNG SOURCE TARGET SECONDS

Talks to 127.0.0.1 only. Exit status 1 with one line on stderr where a check fails.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import requests
import tritonclient.grpc as grpcclient
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

HOST = "127.0.0.1"
DIGITS = [str(d) for d in range(10)]


def fail(message: str) -> None:
    print(f"kube-smoke: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def grpc_health(port: int) -> str:
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        status = stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def probes(manifest: str) -> None:
    """Call every probe the container declares, as the kubelet would."""
    (container,) = yaml.safe_load(Path(manifest).read_text())["spec"]["template"]["spec"][
        "containers"
    ]
    seen = []
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(name)
        if not probe:
            continue
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = f"http://{HOST}:{get['port']}{get['path']}"
            code = requests.get(url, timeout=probe.get("timeoutSeconds", 1)).status_code
            if not 200 <= code < 400:
                fail(f"{name} GET {get['path']} answered {code}")
            seen.append(f"{name} GET {get['path']} {code}")
        elif "grpc" in probe:
            status = grpc_health(probe["grpc"]["port"])
            if status != "SERVING":
                fail(f"{name} gRPC health is {status}")
            seen.append(f"{name} gRPC health {status}")
        else:
            fail(f"{name}: a handler this smoke does not call: {sorted(probe)}")
    print("kube-smoke: probes pass: " + "; ".join(seen))


def classify(port: int, key: str | None, png: bytes) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    files = {"image": ("digit.png", png, "image/png")}
    return requests.post(f"http://{HOST}:{port}/classify", files=files, headers=headers, timeout=30)


def grpc_infer(client: grpcclient.InferenceServerClient, key: str | None, png: bytes):
    image = grpcclient.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([png], dtype=np.object_))
    headers = {"authorization": f"Bearer {key}"} if key else None
    outputs = [grpcclient.InferRequestedOutput("labels")]
    return client.infer("digits", [image], outputs=outputs, headers=headers, client_timeout=30)


def wires(http_port: str, grpc_port: str, key: str, png_path: str) -> None:
    png = Path(png_path).read_bytes()
    answer = classify(int(http_port), key, png)
    if answer.status_code != 200:
        fail(f"/classify with the key answered {answer.status_code}: {answer.text[:200]}")
    body = answer.json()
    label = body["predictions"][0]["top_k"][0]["label"]
    if body["model"] != "digits" or label not in DIGITS:
        fail(f"/classify answered {body}")
    refused = classify(int(http_port), None, png).status_code
    if refused != 401:
        fail(f"/classify without a key answered {refused}, not 401")
    client = grpcclient.InferenceServerClient(f"{HOST}:{grpc_port}")
    labels = grpc_infer(client, key, png).as_numpy("labels")
    try:
        grpc_infer(client, None, png)
        fail("gRPC ModelInfer without a key was answered")
    except InferenceServerException as exc:
        if "UNAUTHENTICATED" not in str(exc.status()):
            fail(f"gRPC ModelInfer without a key: {exc.status()}, not UNAUTHENTICATED")
    client.close()
    print(
        f"kube-smoke: HTTP /classify -> {label} (v{body['version']}), without key 401;"
        f" gRPC ModelInfer -> labels {labels.tolist()}, without key UNAUTHENTICATED"
    )


def publish(
    http_port: str, grpc_port: str, key: str, png_path: str, source: str, target: str, seconds: str
) -> None:
    """Copy SOURCE to TARGET as an operator would while both wires are under a request loop."""
    png = Path(png_path).read_bytes()
    deadline = time.monotonic() + float(seconds)
    new_version = int(Path(target).name)
    stop = threading.Event()
    counts = {"http": 0, "grpc": 0}
    versions: dict[int, int] = {}
    failures: list[str] = []
    picked_up: list[float] = []
    lock = threading.Lock()

    def http_loop() -> None:
        while not stop.is_set():
            try:
                answer = classify(int(http_port), key, png)
                ok = answer.status_code == 200
                version = answer.json()["version"] if ok else None
            except (requests.RequestException, ValueError, KeyError) as exc:
                ok, version, answer = False, None, exc
            with lock:
                counts["http"] += 1
                if not ok:
                    failures.append(f"HTTP: {getattr(answer, 'status_code', answer)}")
                else:
                    versions[version] = versions.get(version, 0) + 1
                    if version == new_version and not picked_up:
                        picked_up.append(time.monotonic())

    def grpc_loop() -> None:
        client = grpcclient.InferenceServerClient(f"{HOST}:{grpc_port}")
        while not stop.is_set():
            try:
                grpc_infer(client, key, png)
                ok = True
            except InferenceServerException as exc:
                ok, error = False, exc
            with lock:
                counts["grpc"] += 1
                if not ok:
                    failures.append(f"gRPC: {error}")
        client.close()

    threads = [threading.Thread(target=f, daemon=True) for f in (http_loop, grpc_loop)]
    for thread in threads:
        thread.start()
    time.sleep(2)  # NOTE: the loop runs before, during and after the publish
    staging = Path(target).with_name(f".publishing-{new_version}")
    shutil.copytree(source, staging)
    published = time.monotonic()
    staging.rename(target)  # NOTE: one rename: the poller never sees a half-copied version
    while time.monotonic() < deadline and not picked_up:
        time.sleep(0.2)
    time.sleep(3 if picked_up else 0)  # NOTE: keep calling after the swap, on the new version
    stop.set()
    for thread in threads:
        thread.join(timeout=40)
    total = counts["http"] + counts["grpc"]
    summary = (
        f"{total} requests ({counts['http']} HTTP, {counts['grpc']} gRPC) around the publish,"
        f" {len(failures)} failed; HTTP answers by version {dict(sorted(versions.items()))}"
    )
    if not picked_up:
        fail(f"version {new_version} not served within {seconds}s of the publish; {summary}")
    if failures:
        fail(f"{summary}; first failures: {failures[:3]}")
    if counts["http"] == 0 or counts["grpc"] == 0:
        fail(f"a wire saw no request: {summary}")
    listed = requests.get(
        f"http://{HOST}:{http_port}/models", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).json()["models"]
    states = {f"v{m['version']}": m["status"] for m in listed if m["name"] == "digits"}
    print(
        f"kube-smoke: version {new_version} published to the volume served after"
        f" {picked_up[0] - published:.1f}s; {summary}; GET /models: digits {states}"
    )


if __name__ == "__main__":
    commands = {"probes": (probes, 1), "wires": (wires, 4), "publish": (publish, 7)}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    command, arity = commands[sys.argv[1]]
    if len(sys.argv) - 2 != arity:
        sys.exit(__doc__)
    command(*sys.argv[2:])
