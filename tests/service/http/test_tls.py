"""TLS on both wires: a CA and certificates made at run time, real servers on loopback, tritonclient.

One server with TLS (``VISOR_TLS_CERT_FILE`` / ``VISOR_TLS_KEY_FILE``) and one with mutual TLS
(``VISOR_TLS_CLIENT_CA_FILE`` too): clients that trust the CA (and, under mutual TLS, present a
certificate it signed) are answered on HTTP and gRPC; plain clients, clients without a
certificate and clients with another CA's certificate are refused on both ports.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers import ROOT
from tests.helpers.models import image_pixels, reference_probabilities, tiny_repo
from tests.helpers.servers import ClientTLS, Server, start_server

PIXELS = np.stack([image_pixels(k) for k in ("top", "bottom", "left")]).astype(np.float32)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    ca: Path  # signs the server's and the client's certificates
    server: Issued  # CN visor, SANs 127.0.0.1 and localhost, serverAuth
    client: Issued  # clientAuth, signed by ``ca``
    stranger: Issued  # clientAuth, signed by another CA the server does not know
    encrypted_key: Path  # the server's key, encrypted with a passphrase


class _Authority:
    """A CA that issues certificates (EC P-256, valid for a day)."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = self._build(
            name,
            self.key.public_key(),
            issuer=None,
            extensions=[
                (x509.BasicConstraints(ca=True, path_length=None), True),
                (_key_usage(cert_sign=True), True),
            ],
        )

    def issue(
        self, name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName] | None = None
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(cert_sign=False), True),
            (x509.ExtendedKeyUsage([usage]), False),
        ]
        if sans:
            extensions.append((x509.SubjectAlternativeName(sans), False))
        return key, self._build(name, key.public_key(), issuer=self, extensions=extensions)

    def _build(self, name, public_key, issuer, extensions) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject if issuer else subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    (issuer or self).key.public_key()
                ),
                False,
            )
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign((issuer or self).key, hashes.SHA256())


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write(folder: Path, name: str, key, cert: x509.Certificate) -> Issued:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Issued(cert_path, key_path)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("tls")
    ca, other_ca = _Authority("visor test CA"), _Authority("another CA")
    (folder / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    server_key, server_cert = ca.issue("visor", ExtendedKeyUsageOID.SERVER_AUTH, sans)
    server = _write(folder, "server", server_key, server_cert)
    encrypted = folder / "server-encrypted.key"
    encrypted.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return Certs(
        ca=folder / "ca.pem",
        server=server,
        client=_write(folder, "client", *ca.issue("client", ExtendedKeyUsageOID.CLIENT_AUTH)),
        stranger=_write(
            folder, "stranger", *other_ca.issue("stranger", ExtendedKeyUsageOID.CLIENT_AUTH)
        ),
        encrypted_key=encrypted,
    )


def client_tls(certs: Certs, client: Issued | None) -> ClientTLS:
    """Trust the test CA; present ``client``'s certificate when given."""
    context = ssl.create_default_context(cafile=certs.ca)
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return ClientTLS(
        context,
        grpc.ssl_channel_credentials(
            root_certificates=certs.ca.read_bytes(),
            private_key=client.key.read_bytes() if client else None,
            certificate_chain=client.cert.read_bytes() if client else None,
        ),
    )


@pytest.fixture(scope="module")
def tls_server(workdir: Path, certs: Certs) -> Iterator[Server]:
    srv = start_server(
        workdir,
        tiny_repo(workdir / "tls"),
        tls=client_tls(certs, None),
        tls_cert_file=str(certs.server.cert),
        tls_key_file=str(certs.server.key),
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def mtls_server(workdir: Path, certs: Certs) -> Iterator[Server]:
    srv = start_server(
        workdir,
        tiny_repo(workdir / "mtls"),
        tls=client_tls(certs, certs.client),
        workers=1,
        tls_cert_file=str(certs.server.cert),
        tls_key_file=str(certs.server.key),
        tls_client_ca_file=str(certs.ca),
    )
    yield srv
    srv.stop()


def _http_port(server: Server) -> str:
    return server.http.rsplit(":", 1)[1]


def triton_http(server: Server, certs: Certs | None, client: Issued | None = None):
    """tritonclient.http over TLS trusting the test CA (plain HTTP when ``certs`` is None)."""
    url = f"127.0.0.1:{_http_port(server)}"
    if certs is None:
        return thttp.InferenceServerClient(url)
    options = {"ca_certs": str(certs.ca)}
    if client is not None:
        options |= {"certfile": str(client.cert), "keyfile": str(client.key)}
    return thttp.InferenceServerClient(url, ssl=True, ssl_options=options)


def triton_grpc(server: Server, certs: Certs | None, client: Issued | None = None):
    """tritonclient.grpc over TLS trusting the test CA (a plain channel when ``certs`` is None)."""
    if certs is None:
        return tgrpc.InferenceServerClient(server.grpc)
    return tgrpc.InferenceServerClient(
        server.grpc,
        ssl=True,
        root_certificates=str(certs.ca),
        private_key=str(client.key) if client else None,
        certificate_chain=str(client.cert) if client else None,
    )


def infer(client, module) -> np.ndarray:
    tensor = module.InferInput("image", list(PIXELS.shape), "FP32")
    tensor.set_data_from_numpy(PIXELS)
    result = client.infer("tiny", [tensor], outputs=[module.InferRequestedOutput("probabilities")])
    return result.as_numpy("probabilities")


def assert_answers(server: Server, certs: Certs, client: Issued | None = None) -> None:
    for triton, module in ((triton_http, thttp), (triton_grpc, tgrpc)):
        with triton(server, certs, client) as connection:
            assert connection.is_server_ready()
            np.testing.assert_allclose(
                infer(connection, module), reference_probabilities(PIXELS), atol=1e-5
            )


def assert_refused(server: Server, certs: Certs | None, client: Issued | None = None) -> None:
    """Neither port answers this client: the TLS handshake (or the plain request) fails, and the
    HTTP client sees the connection fail (an ssl error, a reset, or a close before any header)."""
    with (
        triton_http(server, certs, client) as connection,
        pytest.raises((InferenceServerException, OSError, http.client.HTTPException)),
    ):
        connection.is_server_ready()
    with (
        triton_grpc(server, certs, client) as connection,
        pytest.raises(InferenceServerException, match="UNAVAILABLE"),
    ):
        connection.is_server_ready()


def test_tls_answers_a_client_that_trusts_the_ca_on_both_wires(
    tls_server: Server, certs: Certs
) -> None:
    assert_answers(tls_server, certs)


def test_plain_clients_are_refused_on_both_tls_ports(tls_server: Server, certs: Certs) -> None:
    assert_refused(tls_server, None)
    plain = tls_server.http.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/readyz", timeout=5)
    with grpc.insecure_channel(tls_server.grpc) as channel, pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert_answers(tls_server, certs)  # the refused attempts left the server serving


def test_mutual_tls_answers_a_client_certificate_from_the_client_ca(
    mtls_server: Server, certs: Certs
) -> None:
    assert_answers(mtls_server, certs, certs.client)


def test_mutual_tls_refuses_clients_without_a_certificate_or_with_another_cas(
    mtls_server: Server, certs: Certs
) -> None:
    assert_refused(mtls_server, certs, None)
    assert_refused(mtls_server, certs, certs.stranger)
    assert_refused(mtls_server, None)
    assert_answers(mtls_server, certs, certs.client)


def _healthcheck(server: Server, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VISOR_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "healthcheck.py"), "/readyz"],
        env={**clean, "VISOR_HTTP_PORT": _http_port(server), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_image_healthcheck_follows_the_tls_settings(
    tls_server: Server, mtls_server: Server, certs: Certs
) -> None:
    server_tls = {
        "VISOR_TLS_CERT_FILE": str(certs.server.cert),
        "VISOR_TLS_KEY_FILE": str(certs.server.key),
    }
    assert _healthcheck(tls_server, **server_tls).returncode == 0
    assert _healthcheck(tls_server).returncode == 1  # plain http to a TLS port
    mutual = {**server_tls, "VISOR_TLS_CLIENT_CA_FILE": str(certs.ca)}
    as_client = {
        "VISOR_HEALTHCHECK_CERT_FILE": str(certs.client.cert),
        "VISOR_HEALTHCHECK_KEY_FILE": str(certs.client.key),
    }
    assert _healthcheck(mtls_server, **mutual, **as_client).returncode == 0
    missing = _healthcheck(mtls_server, **mutual)
    assert missing.returncode == 1 and "VISOR_HEALTHCHECK_CERT_FILE" in missing.stderr
    as_stranger = {
        "VISOR_HEALTHCHECK_CERT_FILE": str(certs.stranger.cert),
        "VISOR_HEALTHCHECK_KEY_FILE": str(certs.stranger.key),
    }
    assert _healthcheck(mtls_server, **mutual, **as_stranger).returncode == 1


def _serve(models: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VISOR_")}
    return subprocess.run(
        [sys.executable, "-m", "service", "serve", "--models", str(models)],
        cwd=ROOT,
        # port 0: no port check, which would fail first where 3000 or 50051 is taken
        env={**clean, "VISOR_HOST": "127.0.0.1", "VISOR_HTTP_PORT": "0", "VISOR_GRPC_PORT": "0"}
        | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cert": "server_cert"}, "tls_key_file (VISOR_TLS_KEY_FILE) = None: tls_cert_file and"),
        ({"key": "server_key"}, "tls_cert_file and tls_key_file come together"),
        ({"client_ca": "ca"}, "mutual TLS needs the server's own tls_cert_file"),
        ({"cert": "missing", "key": "server_key"}, "{missing} cannot be read: No such file"),
        ({"cert": "folder", "key": "server_key"}, "{folder} cannot be read: Is a directory"),
        ({"cert": "garbage", "key": "server_key"}, "CERT_FILE) {garbage} holds no PEM certificate"),
        ({"cert": "server_key", "key": "server_key"}, "CERT_FILE) {server_key} holds no PEM cert"),
        ({"cert": "server_cert", "key": "garbage"}, "KEY_FILE) {garbage} holds no PEM private key"),
        ({"cert": "server_cert", "key": "client_key"}, "{client_key} is not the private key of"),
        ({"cert": "server_cert", "key": "encrypted_key"}, "VISOR_TLS_KEY_FILE) is encrypted"),
        (
            {"cert": "server_cert", "key": "server_key", "client_ca": "server_key"},
            "CLIENT_CA_FILE) {server_key} holds no PEM certificate",
        ),
    ],
)
def test_bad_tls_files_are_one_line_and_exit_2(
    tmp_path: Path, certs: Certs, files: dict[str, str], expected: str
) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    paths = {
        "server_cert": certs.server.cert,
        "server_key": certs.server.key,
        "client_key": certs.client.key,
        "ca": certs.ca,
        "encrypted_key": certs.encrypted_key,
        "garbage": tmp_path / "garbage.pem",
        "missing": tmp_path / "no-such.pem",
        "folder": tmp_path,
    }
    env = {f"VISOR_TLS_{role.upper()}_FILE": str(paths[name]) for role, name in files.items()}
    done = _serve(tmp_path, env)  # the checks need a folder, not a model in it
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m service serve: error: ")
    assert expected.format_map({k: str(v) for k, v in paths.items()}) in lines[0]
