"""``python -m training import|train --out s3://bucket/prefix`` against a real S3 server on loopback:
the version appears only once complete, a server's cache accepts it (sha256 and golden checks),
numbers never collide, and refused credentials fail before any work."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import training  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from contract.storage import MARKER
from service.engine import Engine
from service.settings import Settings
from service.types import ModelStatus
from tests.helpers.servers import LoopThread
from tests.helpers.training import run_training_cli
from training.publish_remote import CLAIM, claim

pytest.importorskip("s3fs")
keras = pytest.importorskip("tf_keras")


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("remote")
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(base / "m.h5")
    (base / "labels.txt").write_text("a\nb\nc\n")
    return base / "m.h5", base / "labels.txt"


def _import(keras_file: tuple[Path, Path], url: str, env: dict):
    model, labels = keras_file
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return run_training_cli(
        "--quiet",
        "import",
        str(model),
        "--labels",
        str(labels),
        "--name",
        "small",
        "--out",
        url,
        env={**clean, **env},
    )


def _serve_from(url: str, cache: Path, env: dict, monkeypatch: pytest.MonkeyPatch) -> list:
    """Load every version an in-process engine finds in the bucket; their infos."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(
        models=url,
        models_cache=cache,
        providers=["CPUExecutionProvider"],
        poll_interval_s=0,
        warmup_batch_sizes=[1],
        version_policy="all",
        _env_file=None,
    )
    loop = LoopThread()
    engine = Engine(settings, registry=CollectorRegistry())
    try:
        loop.run(engine.start())
        return engine.models()
    finally:
        loop.run(engine.stop())
        loop.close()


def test_import_publishes_complete_versions_a_server_accepts(
    s3_server, keras_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.new_bucket()
    url = f"s3://{bucket}/prod"
    for version in (1, 2):
        done = _import(keras_file, url, s3_server.env())
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == f"published {url}/small/{version}"
    fs = s3_server.fs()
    names = {p.rsplit("/", 1)[1] for p in fs.ls(f"{bucket}/prod/small/1", detail=False)}
    assert {MARKER, CLAIM, "metadata.json", "model.onnx", "model.h5", "golden.npz"} <= names
    marker = json.loads(fs.cat_file(f"{bucket}/prod/small/1/{MARKER}"))
    assert "saved_model/saved_model.pb" in marker["files"]
    infos = _serve_from(url, tmp_path / "cache", s3_server.env(), monkeypatch)
    assert [(i.name, i.version, i.status) for i in infos] == [
        ("small", 1, ModelStatus.READY),
        ("small", 2, ModelStatus.READY),
    ]


def test_train_publishes_to_the_bucket(
    s3_server, make_classes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.new_bucket()
    url = f"s3://{bucket}/prod"
    data = make_classes(tmp_path / "data", {"a": 12, "b": 12})
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = run_training_cli(
        "--quiet",
        "train",
        "--data",
        str(data),
        "--name",
        "pair",
        "--out",
        url,
        "--image-size",
        "12",
        "--epochs",
        "1",
        "--work-dir",
        str(tmp_path / "w"),
        "--min-test-accuracy",
        "0",
        env={**clean, **s3_server.env()},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"published {url}/pair/1 " in done.stdout
    infos = _serve_from(url, tmp_path / "cache", s3_server.env(), monkeypatch)
    assert [(i.name, i.version, i.status) for i in infos] == [("pair", 1, ModelStatus.READY)]


def test_refused_credentials_fail_in_one_line_before_any_export(s3_server, keras_file) -> None:
    bucket = s3_server.new_bucket()
    done = _import(keras_file, f"s3://{bucket}/prod", s3_server.env(secret="wrong"))
    assert done.returncode == 1
    # TensorFlow's own start-up lines may come first; Visor's error is one line, the last
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert errors == [done.stderr.strip().splitlines()[-1]], done.stderr[-2000:]
    assert errors[0].startswith("python -m training import: error: the model store s3://")
    assert "refused the credentials" in errors[0]
    assert s3_server.fs().ls(bucket, detail=False) == []


def test_concurrent_publishers_claim_distinct_versions(s3_server) -> None:
    bucket = s3_server.new_bucket()
    fs = s3_server.fs()
    # Every claim lists the bucket, then creates <version>/_claim only if it is absent; racing
    # publishers that saw the same listing must end up with different numbers.
    with ThreadPoolExecutor(6) as pool:
        versions = list(pool.map(lambda _: claim(s3_server.fs(), f"{bucket}/prod/m"), range(6)))
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(FileExistsError), fs.open(f"{bucket}/prod/m/3/{CLAIM}", "xb") as f:
        f.write(b"late")


def test_publish_copies_a_version_folder_as_the_next_version(
    s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers.models import write_version

    folder = write_version(tmp_path / "models", "tiny", 7)
    bucket = s3_server.new_bucket()
    url = f"s3://{bucket}/prod"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    for version in (1, 2):
        done = run_training_cli(
            "publish", str(folder), "--out", url, env={**clean, **s3_server.env()}
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == f"published {url}/tiny/{version}"
    meta = json.loads(s3_server.fs().cat_file(f"{bucket}/prod/tiny/2/metadata.json"))
    assert meta["version"] == 2
    infos = _serve_from(url, tmp_path / "cache", s3_server.env(), monkeypatch)
    assert [(i.name, i.version, i.status) for i in infos] == [
        ("tiny", 1, ModelStatus.READY),
        ("tiny", 2, ModelStatus.READY),
    ]
    not_a_bucket = run_training_cli("publish", str(folder), "--out", str(tmp_path / "x"))
    assert not_a_bucket.returncode == 1 and "is not a bucket URL" in not_a_bucket.stderr
