"""Models from object storage (``--models s3://bucket/prefix``) against a real S3 server on loopback.

moto's standalone server with IAM checks on (tests/helpers/s3.py); Visor reaches it through
a TCP forwarder the test controls, so the store can be away at start or vanish mid-download.
Versions are uploaded with the real publisher's code (training/publish_remote.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from contract.storage import MARKER, StoreDenied, check_access, manifest
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from service.policy import VersionPolicy
from service.settings import Settings
from service.storage import Mirror
from tests.helpers import ROOT
from tests.helpers.models import image_pixels, reference_probabilities, write_version
from tests.helpers.s3 import FaultProxy, publish, wait_until
from tests.helpers.servers import HTTP, Server, free_port

pytest.importorskip("s3fs")


# --- helpers -------------------------------------------------------------------------------
def local_version(root: Path, version: int, *, padding: int = 0) -> Path:
    folder = write_version(root, "tiny", version)
    if padding:
        (folder / "padding.bin").write_bytes(os.urandom(padding))
    return folder


def launch(workdir: Path, url: str, aws: dict, **settings: object) -> Server:
    """``python -m service serve --models URL`` (HTTP + gRPC); returns without waiting."""
    http_port, grpc_port = free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VISOR_", "AWS_"))}
    env = {
        **clean,
        **aws,
        "VISOR_MODELS": url,
        "VISOR_MODELS_CACHE": str(workdir / "cache"),
        "VISOR_HOST": "127.0.0.1",
        "VISOR_HTTP_PORT": str(http_port),
        "VISOR_GRPC_PORT": str(grpc_port),
        "VISOR_WORKERS": "1",
        "VISOR_PROVIDERS": '["CPUExecutionProvider"]',
        "VISOR_POLL_INTERVAL_S": "0.5",
        "VISOR_WARMUP_BATCH_SIZES": "[1]",
        "VISOR_INTRA_OP_THREADS": "1",
        "VISOR_INFERENCE_THREADS": "1",
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONUNBUFFERED": "1",
    }
    for key, value in settings.items():
        env[f"VISOR_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    log = workdir / f"server-{http_port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(proc, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log)


def ready(server: Server) -> bool:
    assert server.proc.poll() is None, server.output()
    try:
        return HTTP.get(f"{server.http}/readyz", timeout=5).status_code == 200
    except Exception:  # noqa: BLE001 - not listening yet
        return False


def infer(server: Server) -> tuple[str, np.ndarray]:
    """The served version of "tiny" and its probabilities for one image (HTTP, v2 JSON)."""
    pixels = image_pixels("bottom").astype(np.float32)
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "FP32",
                "shape": [1, 8, 8, 1],
                "data": pixels.ravel().tolist(),
            }
        ]
    }
    r = HTTP.post(f"{server.http}/v2/models/tiny/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    probs = np.array(out["outputs"][0]["data"], np.float64).reshape(1, 3)
    return out["model_version"], probs


def served_version(server: Server) -> str | None:
    try:
        return infer(server)[0]
    except AssertionError:
        return None


def versions_known(server: Server) -> set[int]:
    return {m["version"] for m in HTTP.get(f"{server.http}/models").json()["models"]}


@pytest.fixture
def bucket(s3_server) -> str:
    return s3_server.new_bucket()


@pytest.fixture
def proxy(s3_server) -> FaultProxy:
    p = FaultProxy(int(s3_server.url.rsplit(":", 1)[1]))
    yield p
    p.down()


@pytest.fixture
def stop_servers():
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


# --- a real server -------------------------------------------------------------------------
def test_serves_a_version_from_the_bucket_and_picks_up_the_next(
    s3_server, bucket, proxy, stop_servers, tmp_path: Path
) -> None:
    fs = s3_server.fs()
    publish(fs, bucket, local_version(tmp_path / "local", 1), "tiny", 1)
    proxy.up()
    server = launch(tmp_path, f"s3://{bucket}/prod", s3_server.env(proxy.url))
    stop_servers.append(server)
    wait_until(lambda: ready(server), 120, "ready")
    version, probs = infer(server)
    expected = reference_probabilities(image_pixels("bottom")[None].astype(np.float32))
    assert version == "1" and np.allclose(probs, expected, atol=1e-5)
    with grpc.insecure_channel(server.grpc) as channel:
        meta = pb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
            pb.ModelMetadataRequest(name="tiny"), timeout=30
        )
    assert list(meta.versions) == ["1"]
    # the cache holds exactly what the bucket's marker listed, checked
    cached = tmp_path / "cache" / "tiny" / "1"
    assert sorted(p.name for p in cached.iterdir()) == [MARKER, "metadata.json", "model.onnx"]

    for version in (2, 3):
        publish(fs, bucket, local_version(tmp_path / "local", version), "tiny", version)
        wait_until(lambda v=version: served_version(server) == str(v), 60, f"v{version} served")
    # latest:1 keeps the newest older version as the fallback; v1 leaves the cache
    wait_until(lambda: not cached.exists(), 30, "v1 pruned from the cache")
    assert sorted(p.name for p in cached.parent.iterdir()) == ["2", "3"]
    assert ready(server)


def test_wrong_credentials_at_start_are_one_line_and_exit_2(
    s3_server, bucket, tmp_path: Path
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VISOR_", "AWS_"))}
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--models", f"s3://{bucket}/prod"],
        cwd=ROOT,
        env={**clean, **s3_server.env(secret="not-the-secret"), "VISOR_HTTP_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m service serve: error: the model store s3://")
    assert "refused the credentials" in lines[0] and "AWS_ACCESS_KEY_ID" in lines[0]


def test_revoked_credentials_on_a_later_poll_warn_and_keep_serving(
    s3_server, bucket, proxy, stop_servers, tmp_path: Path
) -> None:
    fs = s3_server.fs()
    publish(fs, bucket, local_version(tmp_path / "local", 1), "tiny", 1)
    key_id, secret = s3_server.new_key()
    proxy.up()
    server = launch(
        tmp_path, f"s3://{bucket}/prod", s3_server.env(proxy.url, key_id=key_id, secret=secret)
    )
    stop_servers.append(server)
    wait_until(lambda: ready(server), 120, "ready")
    s3_server.client("iam").delete_access_key(UserName="visor", AccessKeyId=key_id)
    publish(fs, bucket, local_version(tmp_path / "local", 2), "tiny", 2)
    wait_until(lambda: "refused the credentials" in server.output(), 60, "the warning")
    assert "WARNING" in server.output()
    assert served_version(server) == "1" and ready(server)
    assert server.proc.poll() is None


def test_bucket_unreachable_at_start_is_not_ready_then_ready(
    s3_server, bucket, proxy, stop_servers, tmp_path: Path
) -> None:
    publish(s3_server.fs(), bucket, local_version(tmp_path / "local", 1), "tiny", 1)
    # the forwarder is not listening: connection refused, as for a store that is down
    server = launch(tmp_path, f"s3://{bucket}/prod", s3_server.env(proxy.url))
    stop_servers.append(server)
    wait_until(lambda: "unavailable" in server.output(), 120, "the store warning")

    def answers_not_ready() -> bool:
        try:
            return HTTP.get(f"{server.http}/readyz", timeout=5).status_code == 503
        except Exception:  # noqa: BLE001 - HTTP not up yet
            return False

    wait_until(answers_not_ready, 120, "/readyz 503")
    proxy.up()
    wait_until(lambda: ready(server), 60, "ready once the store answers")
    assert served_version(server) == "1"


def test_a_half_uploaded_version_is_never_served(
    s3_server, bucket, proxy, stop_servers, tmp_path: Path
) -> None:
    fs = s3_server.fs()
    publish(fs, bucket, local_version(tmp_path / "local", 1), "tiny", 1)
    # v2's files are all there, valid even, but the publisher has not written the marker yet
    publish(fs, bucket, local_version(tmp_path / "local", 2), "tiny", 2, marker=False)
    proxy.up()
    server = launch(tmp_path, f"s3://{bucket}/prod", s3_server.env(proxy.url))
    stop_servers.append(server)
    wait_until(lambda: ready(server), 120, "ready")
    marker = f"/tiny/2/{MARKER}"
    seen = proxy.count(marker)
    wait_until(lambda: proxy.count(marker) >= seen + 3, 60, "three polls looking for v2")
    assert served_version(server) == "1"
    assert versions_known(server) == {1}
    assert not (tmp_path / "cache" / "tiny" / "2").exists()
    fs.pipe_file(
        f"{bucket}/prod/tiny/2/{MARKER}", json.dumps(manifest(tmp_path / "local/tiny/2")).encode()
    )
    wait_until(lambda: served_version(server) == "2", 60, "v2 served once complete")


def test_store_gone_mid_download_keeps_the_old_version_serving(
    s3_server, bucket, proxy, stop_servers, tmp_path: Path
) -> None:
    fs = s3_server.fs()
    publish(fs, bucket, local_version(tmp_path / "local", 1), "tiny", 1)
    proxy.up()
    server = launch(tmp_path, f"s3://{bucket}/prod", s3_server.env(proxy.url))
    stop_servers.append(server)
    wait_until(lambda: ready(server), 120, "ready")
    # the store vanishes after the first 64 KiB of v2's 4 MiB file
    proxy.cut_during("/tiny/2/padding.bin", 64 * 1024)
    publish(fs, bucket, local_version(tmp_path / "local", 2, padding=4 << 20), "tiny", 2)
    assert proxy.cut.wait(60), "the download of v2 never started"
    wait_until(lambda: "unavailable" in server.output(), 60, "the store warning")
    assert served_version(server) == "1" and ready(server)
    assert versions_known(server) == {1}
    cache = tmp_path / "cache"
    assert not (cache / "tiny" / "2").exists()
    wait_until(lambda: not any((cache / ".incoming").iterdir()), 30, "the staging folder removed")
    proxy.up()
    wait_until(lambda: served_version(server) == "2", 60, "v2 served once the store is back")
    assert (cache / "tiny" / "2" / "padding.bin").stat().st_size == 4 << 20


# --- the mirror on its own -----------------------------------------------------------------
@pytest.fixture
def aws_env(s3_server, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)


def test_a_file_that_does_not_match_its_marker_is_never_cached(
    s3_server, bucket, aws_env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fs = s3_server.fs()
    publish(fs, bucket, local_version(tmp_path / "local", 1), "tiny", 1)
    publish(fs, bucket, local_version(tmp_path / "local", 2), "tiny", 2)
    fs.pipe_file(f"{bucket}/prod/tiny/2/model.onnx", b"replaced after publishing")
    mirror = Mirror(f"s3://{bucket}/prod", tmp_path / "cache")
    mirror.pull(VersionPolicy.parse("latest:1"))
    # v2 is refused with the reason, and v1 (the next newest) is fetched instead
    assert sorted(p.name for p in (tmp_path / "cache" / "tiny").iterdir()) == ["1"]
    assert "model tiny v2" in caplog.text and "model.onnx is 25 bytes" in caplog.text


def test_the_policy_decides_what_is_downloaded_and_removed_versions_leave(
    s3_server, bucket, aws_env, tmp_path: Path
) -> None:
    fs = s3_server.fs()
    for v in (1, 2, 3):
        publish(fs, bucket, local_version(tmp_path / "local", v), "tiny", v)
    mirror = Mirror(f"s3://{bucket}/prod", tmp_path / "cache")
    cached = lambda: sorted(int(p.name) for p in (tmp_path / "cache" / "tiny").iterdir())
    mirror.pull(VersionPolicy.parse("specific:1,3"))
    assert cached() == [1, 3]
    # v3 failed to load here: the policy falls back to v2, v3 stays to keep its fingerprint,
    # and v1 stays as the newest version older than the wanted one
    mirror.pull(VersionPolicy.parse("latest:1"), failed=[("tiny", 3)])
    assert cached() == [1, 2, 3]
    # the operator deletes v3's marker: it goes, even though this process still serves it
    fs.rm(f"{bucket}/prod/tiny/3/{MARKER}")
    mirror.pull(VersionPolicy.parse("latest:1"), serving=[("tiny", 3)])
    assert cached() == [1, 2]
    # a new version: the previous one stays as the fallback, the one before it leaves
    publish(fs, bucket, local_version(tmp_path / "local", 4), "tiny", 4)
    mirror.pull(VersionPolicy.parse("latest:1"))
    assert cached() == [2, 4]


def test_check_access_tells_refused_credentials_from_an_unreachable_store(
    s3_server, bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3_server.env(secret="wrong").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(StoreDenied, match="refused the credentials"):
        check_access(f"s3://{bucket}/prod")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    assert check_access(f"s3://{bucket}/prod") is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    assert "unreachable" in (check_access(f"s3://{bucket}/prod") or "")


def test_a_bucket_url_keeps_its_slashes_and_serves_from_the_cache(tmp_path: Path) -> None:
    s = Settings(models="s3://bucket/a/prefix", models_cache=tmp_path / "c", _env_file=None)
    assert s.models_url == "s3://bucket/a/prefix" and s.models == tmp_path / "c"
    plain = Settings(models=str(tmp_path), _env_file=None)
    assert plain.models == tmp_path and plain.models_url is None


def test_a_cache_folder_of_another_user_is_refused_at_start(
    s3_server, bucket, aws_env, tmp_path: Path
) -> None:
    from service.startup import StartupError, check_models

    cache = tmp_path / "planted"
    cache.mkdir()
    settings = Settings(models=f"s3://{bucket}/prod", models_cache=cache, _env_file=None)
    check_models(settings)  # ours: accepted
    if os.getuid() != 0:
        pytest.skip("only root can give a folder to another user")
    os.chown(cache, 12345, 12345)
    with pytest.raises(StartupError, match="belongs to another user"):
        check_models(settings)


def test_a_rollout_in_the_bucket_pins_its_versions_and_pools_evidence_there(
    s3_server, bucket, aws_env, tmp_path: Path
) -> None:
    """rollout.yaml is mirrored with the versions; its current and candidate are downloaded
    whatever the version policy says; the fleet's evidence and decisions live in the bucket."""
    from service.rollout import Ledger

    fs = s3_server.fs()
    for v in (1, 2, 3):
        publish(fs, bucket, local_version(tmp_path / "local", v), "tiny", v)
    spec = b"policy: canary\ncurrent: 1\ncandidate: 2\n"
    fs.pipe_file(f"{bucket}/prod/tiny/rollout.yaml", spec)
    cache = tmp_path / "cache"
    mirror = Mirror(f"s3://{bucket}/prod", cache)
    for v in (1, 2):  # another model whose version numbers tiny's rollout also pins
        publish(fs, bucket, local_version(tmp_path / "second", v), "second", v)
    asked = []
    pins = lambda name, versions: asked.append((name, versions)) or {1, 2}
    mirror.pull(VersionPolicy.parse("latest:1"), pinned=pins)
    assert sorted(asked) == [("second", [1, 2]), ("tiny", [1, 2, 3])]
    assert sorted(p.name for p in (cache / "tiny").iterdir()) == ["1", "2", "3", "rollout.yaml"]
    assert sorted(p.name for p in (cache / "second").iterdir()) == ["1", "2"]
    assert (cache / "tiny" / "rollout.yaml").read_bytes() == spec
    fs.rm(f"{bucket}/prod/tiny/rollout.yaml")  # the rollout is withdrawn: so is its file
    mirror.pull(VersionPolicy.parse("latest:1"))
    assert sorted(p.name for p in (cache / "tiny").iterdir()) == ["2", "3"]

    url = f"s3://{bucket}/prod/.rollout"
    a, b = Ledger(url, "replica-a"), Ledger(url, "replica-b")
    a.publish("tiny", (1, 2), {"from": "a"})
    b.publish("tiny", (1, 2), {"from": "b"})
    assert a.gather("tiny", (1, 2)) == ([{"from": "b"}], None)
    b.decide("tiny", (1, 2), {"action": "roll_back", "by": "replica-b"})
    a.decide("tiny", (1, 2), {"action": "promote", "by": "replica-a"})  # later: not the first
    for ledger in (a, b):
        assert ledger.gather("tiny", (1, 2))[1] == {"action": "roll_back", "by": "replica-b"}
    mirror.pull(VersionPolicy.parse("latest:1"))  # ".rollout" is no model
    names = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert names == ["second", "tiny"]
