"""The pure pieces of the HTTP front-end, without a server."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.auth import ApiKeys, key_from_headers
from service.errors import InvalidInput, PayloadTooLarge, Unauthenticated
from service.http.bento import SUPPORTED, bentoml_options, settings_env
from service.http.tensors import inflate, split_body
from service.settings import Settings
from tests.helpers import ROOT


def test_settings_survive_the_trip_to_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(
        models=Path("/m"),
        api_keys=[SecretStr("a"), SecretStr("b,c")],
        workers=3,
        providers=["CPUExecutionProvider"],
        warmup_batch_sizes=[1, 4],
        grace_period_s=7.5,
        protocol="http",
        _env_file=None,
    )
    for key in [k for k in os.environ if k.startswith("VISOR_")]:
        monkeypatch.delenv(key)
    for key, value in settings_env(original).items():
        monkeypatch.setenv(key, value)
    rebuilt = Settings(_env_file=None)
    assert [k.get_secret_value() for k in rebuilt.api_keys] == ["a", "b,c"]
    assert rebuilt.model_dump(exclude={"api_keys"}) == original.model_dump(exclude={"api_keys"})


def test_comma_separated_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISOR_API_KEYS", " k1, k2 ,")
    assert [k.get_secret_value() for k in Settings(_env_file=None).api_keys] == ["k1", "k2"]


def test_api_keys() -> None:
    ApiKeys([]).check(None)  # keys off: anything goes
    keys = ApiKeys([SecretStr("secret-1"), "secret-2"])
    keys.check("secret-1")
    keys.check("secret-2")
    for wrong in (None, "", "secret-", "secret-10", "SECRET-1"):
        with pytest.raises(Unauthenticated):
            keys.check(wrong)


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ([("authorization", "Bearer abc")], "abc"),
        ([("authorization", "bearer  abc ")], "abc"),
        ([("x-api-key", "xyz")], "xyz"),
        ([("authorization", "Basic abc")], None),
        ([("accept", "*/*")], None),
    ],
)
def test_key_from_headers(headers: list[tuple[str, str]], key: str | None) -> None:
    assert key_from_headers(headers) == key


def test_inflate_is_bounded() -> None:
    assert inflate(gzip.compress(b"{}"), "gzip", 100) == b"{}"
    assert inflate(b"{}", None, 100) == b"{}"
    with pytest.raises(PayloadTooLarge):
        inflate(gzip.compress(b"x" * 1000), "gzip", 100)
    with pytest.raises(InvalidInput):
        inflate(b"not gzip", "gzip", 100)
    with pytest.raises(InvalidInput):
        inflate(b"{}", "br", 100)


@pytest.mark.parametrize(
    ("body", "length"),
    [
        (b"{", None),
        (b"[]", None),
        (b'{"inputs": []}', "99"),
        (b'{"inputs": []}', "x"),
    ],
)
def test_split_body_refuses_malformed_requests(body: bytes, length: str | None) -> None:
    with pytest.raises(InvalidInput):
        split_body(body, length)


def test_split_body_returns_the_binary_tail() -> None:
    header = b'{"inputs": []}'
    parsed, tail = split_body(header + b"\x01\x02", str(len(header)))
    assert parsed == {"inputs": []} and bytes(tail) == b"\x01\x02"


INJECTED = """
from bentoml._internal.configuration.containers import BentoMLContainer
from service.http.frontend import Visor
Visor.inject_config()
excluded = BentoMLContainer.tracing_excluded_urls.get()
access = BentoMLContainer.api_server_config.logging.access.enabled.get()
print(excluded.url_disabled("http://127.0.0.1:3000/classify"), access)
"""


@pytest.mark.parametrize(("switch", "expected"), [(False, "True False"), (True, "False True")])
def test_bentoml_switches_reach_the_worker_config(switch: bool, expected: str) -> None:
    """Tracing and the access log are off by default, on when asked, as BentoML's worker sees it."""
    settings = Settings(http_tracing=switch, http_access_log=switch, _env_file=None)
    env = {**os.environ, "BENTOML_CONFIG_OPTIONS": bentoml_options(settings)}
    done = subprocess.run(
        [sys.executable, "-c", INJECTED],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == expected


def test_an_untested_bentoml_release_stops_serve_in_one_line(tmp_path: Path) -> None:
    # a real distribution record on PYTHONPATH, found before the installed one
    record = tmp_path / "site" / "bentoml-1.5.0.dist-info"
    record.mkdir(parents=True)
    (record / "METADATA").write_text("Metadata-Version: 2.1\nName: bentoml\nVersion: 1.5.0\n")
    (tmp_path / "models").mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--models", str(tmp_path / "models"),
         "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    [line] = out.stderr.splitlines()
    assert line.startswith("python -m service serve: error: bentoml 1.5.0 installed")
    assert f"bentoml{SUPPORTED['bentoml']}" in line and "--protocol grpc" in line
