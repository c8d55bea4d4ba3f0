"""A real S3-compatible server on loopback for the object-storage tests, and a TCP forwarder in
front of it that makes the store go away on cue.

The server is moto's standalone one (``python -m moto.server``), with its IAM checks on: every
request must be signed by an access key that exists, so wrong or revoked credentials are refused
by the server exactly as S3 refuses them (403 InvalidAccessKeyId / SignatureDoesNotMatch).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.servers import free_port

REGION = "us-east-1"
_ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


def wait_until(predicate: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


@dataclass
class S3Server:
    proc: subprocess.Popen
    url: str
    key_id: str
    secret: str

    def client(self, service: str, key_id: str | None = None, secret: str | None = None):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=key_id or self.key_id,
            aws_secret_access_key=secret or self.secret,
        )

    def new_key(self) -> tuple[str, str]:
        """A second access key of the same user (revocable on its own)."""
        key = self.client("iam").create_access_key(UserName="visor")["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def new_bucket(self) -> str:
        name = f"visor-{uuid.uuid4().hex[:12]}"
        self.client("s3").create_bucket(Bucket=name)
        return name

    def fs(self):
        """An s3fs client of the tests' own (the publisher's side), straight to the server."""
        import s3fs

        return s3fs.S3FileSystem(
            key=self.key_id,
            secret=self.secret,
            client_kwargs={"endpoint_url": self.url, "region_name": REGION},
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def env(
        self, endpoint: str | None = None, secret: str | None = None, key_id: str | None = None
    ) -> dict:
        """The standard AWS variables a Visor process reads (the endpoint: AWS_ENDPOINT_URL)."""
        return {
            "AWS_ENDPOINT_URL": endpoint or self.url,
            "AWS_ACCESS_KEY_ID": key_id or self.key_id,
            "AWS_SECRET_ACCESS_KEY": secret or self.secret,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"moto server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("moto server did not listen in time")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    pytest.importorskip("moto.server", reason="moto[server] (dev extra) runs the S3 server")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    # The first three requests (create the user, allow it everything, make its key) are
    # unauthenticated; every request after them must be signed by a key that exists.
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3", "MOTO_PORT": str(port)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_port(port, proc)
        url = f"http://127.0.0.1:{port}"
        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="visor")
        iam.put_user_policy(UserName="visor", PolicyName="all", PolicyDocument=_ALLOW_ALL)
        key = iam.create_access_key(UserName="visor")["AccessKey"]
        yield S3Server(proc, url, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.terminate()
        proc.wait(20)


class FaultProxy:
    """A TCP forwarder on 127.0.0.1 in front of the S3 server, controlled by the test.

    ``down()`` makes the store go away (listener and every connection closed: connection
    refused), ``up()`` brings it back. ``cut_during(fragment, after)`` forwards the first
    ``after`` bytes of the response to the next GET whose line contains ``fragment``, then
    goes down: the store vanishes in the middle of a download. ``requests`` lists every request
    line seen (``"GET /bucket/key?..."``).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.port = free_port()
        self.requests: list[str] = []
        self.cut = threading.Event()
        self._rule: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        for s in [listener, *sockets]:
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def cut_during(self, fragment: str, after: int) -> None:
        self.cut.clear()
        self._rule = (fragment, after)

    def count(self, fragment: str) -> int:
        with self._lock:
            return sum(fragment in line for line in self.requests)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            state = {"budget": None}
            with self._lock:
                self._sockets |= {client, upstream}
            threading.Thread(
                target=self._requests, args=(client, upstream, state), daemon=True
            ).start()
            threading.Thread(
                target=self._responses, args=(upstream, client, state), daemon=True
            ).start()

    def _requests(self, src: socket.socket, dst: socket.socket, state: dict) -> None:
        pattern = re.compile(rb"^(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/1\.[01]\r$", re.MULTILINE)
        try:
            while data := src.recv(65536):
                for m in pattern.finditer(data):
                    line = m.group(0).decode().rstrip("\r")
                    with self._lock:
                        self.requests.append(line)
                    rule = self._rule
                    if rule is not None and line.startswith("GET ") and rule[0] in line:
                        self._rule = None
                        state["budget"] = rule[1]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src, dst)

    def _responses(self, src: socket.socket, dst: socket.socket, state: dict) -> None:
        try:
            while data := src.recv(65536):
                budget = state["budget"]
                if budget is not None:
                    dst.sendall(data[:budget])
                    state["budget"] = budget - len(data)
                    if state["budget"] <= 0:
                        self.down()
                        self.cut.set()
                        return
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src, dst)


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        try:
            s.close()
        except OSError:
            pass


def publish(fs, bucket: str, folder: Path, name: str, version: int, *, marker: bool = True) -> str:
    """Upload a version folder with the real publisher's code; without the marker: half-uploaded."""
    from contract.storage import MARKER
    from training.publish_remote import upload_version

    prefix = f"{bucket}/prod/{name}/{version}"
    if marker:
        upload_version(fs, prefix, folder)
    else:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            fs.put_file(str(path), f"{prefix}/{path.relative_to(folder).as_posix()}")
        assert not fs.exists(f"{prefix}/{MARKER}")
    return prefix
