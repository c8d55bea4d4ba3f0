"""Checks before a server starts: each problem becomes one line and exit status 2, not a traceback.

``python -m service serve`` runs them before BentoML or the gRPC workers start, so a typo in a
setting, a missing model folder or a port another server holds is said once, in words.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import ValidationError

from service.errors import StartupError
from service.settings import Settings


def _field_names(loc: Iterable[object], flags: Mapping[str, str]) -> str:
    name = str(next(iter(loc), ""))
    if not name:
        return "settings"
    sources = [flags[name]] if name in flags else []
    return f"{name} ({' / '.join([*sources, f'VISOR_{name.upper()}'])})"


def describe(exc: ValidationError, flags: Mapping[str, str]) -> str:
    """Every validation error of ``exc`` on one line: which setting, what it got, what it needs.

    ``flags`` maps a setting to its command-line flag, for the settings that have one.
    """
    parts = []
    for err in exc.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{_field_names(err['loc'], flags)} = {err.get('input')!r}: {message}")
    return "invalid setting: " + "; ".join(parts)


def check_models(settings: Settings) -> None:
    if settings.models_url:
        from contract.storage import StoreDenied, check_access

        # refused credentials stop the start; an unreachable store only delays readiness.
        try:
            check_access(settings.models_url)
        except StoreDenied as exc:
            raise StartupError(str(exc)) from None
        _check_cache(settings.models)
        return
    if not settings.models.is_dir():
        raise StartupError(
            f"the model repository {settings.models} is not a folder: pass --models PATH "
            "(or VISOR_MODELS) naming a folder of <model>/<version>/ (python -m training train)"
        )


def _check_cache(cache: Path) -> None:
    """The bucket's local cache: writable, and not a folder another user prepared for us."""
    try:
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        owner = cache.stat().st_uid
    except OSError as exc:
        raise StartupError(
            f"cannot create the model cache {cache} ({exc.strerror}): set --models-cache "
            "(VISOR_MODELS_CACHE) to a writable folder"
        ) from None
    if owner != os.getuid():
        raise StartupError(
            f"the model cache {cache} belongs to another user: set --models-cache "
            "(VISOR_MODELS_CACHE) to a folder of yours"
        )


def _bind_error(host: str, port: int) -> OSError | None:
    """Why a listener could not bind ``host:port`` now, or None (SO_REUSEADDR, like the servers)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise StartupError(f"cannot bind host {host!r} (--host / VISOR_HOST): {exc}") from None
    family, kind, proto, _, address = found[0]
    with socket.socket(family, kind, proto) as probe:
        # SO_REUSEADDR ignores TIME_WAIT leftovers of a server that just stopped, never a
        # live listener; no SO_REUSEPORT, so a server sharing its port with workers counts too.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc
    return None


def check_ports(settings: Settings) -> None:
    """Refuse ports another process listens on (port 0 means any free port)."""
    wanted = []
    if settings.protocol in ("http", "both"):
        wanted.append(("HTTP", "--http-port", settings.http_port))
    if settings.protocol in ("grpc", "both"):
        wanted.append(("gRPC", "--grpc-port", settings.grpc_port))
    for label, flag, port in wanted:
        error = _bind_error(settings.host, port) if port else None
        if error is None:
            continue
        where = f"{label} port {settings.host}:{port}"
        if error.errno == errno.EADDRINUSE:
            raise StartupError(
                f"{where} is already in use (another server?): stop it or choose another {flag}"
            )
        raise StartupError(f"{where} cannot be bound: {error.strerror} (--host, {flag})")


def _refuse_encrypted_key() -> bytes:
    # gRPC takes no passphrase (uvicorn would), and ssl would otherwise prompt on the terminal
    raise StartupError(
        "the private key tls_key_file (VISOR_TLS_KEY_FILE) is encrypted: give an unencrypted "
        "PEM key (e.g. openssl pkey -in KEY -out PLAIN_KEY), kept readable by the server only"
    )


def check_tls(settings: Settings) -> None:
    """Refuse TLS files that are missing, unreadable, not PEM, or a key that is not the
    certificate's: each front-end would otherwise fail in its own words, per worker."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    client_ca = settings.tls_client_ca_file
    if cert is None or key is None:
        return
    for name, path in (
        ("tls_cert_file", cert),
        ("tls_key_file", key),
        ("tls_client_ca_file", client_ca),
    ):
        if path is None:
            continue
        try:
            with path.open("rb") as file:
                file.read(1)
        except OSError as exc:
            raise StartupError(
                f"{name} (VISOR_{name.upper()}) {path} cannot be read: {exc.strerror}"
            ) from None
    for name, path in (("tls_cert_file", cert), ("tls_client_ca_file", client_ca)):
        if path is not None and not _holds_certificate(path):
            raise StartupError(
                f"{name} (VISOR_{name.upper()}) {path} holds no PEM certificate "
                "(-----BEGIN CERTIFICATE-----)"
            )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            cert, key, password=_refuse_encrypted_key
        )
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise StartupError(
                f"tls_key_file (VISOR_TLS_KEY_FILE) {key} is not the private key of "
                f"tls_cert_file {cert}"
            ) from None
        raise StartupError(
            f"tls_key_file (VISOR_TLS_KEY_FILE) {key} holds no PEM private key "
            "(-----BEGIN PRIVATE KEY-----)"
        ) from None


def _holds_certificate(path: Path) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        return False
    return True
