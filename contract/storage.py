"""Model repositories in object storage: the rules a publisher and a reader share.

``--models s3://bucket/prefix`` (``gs://``, ``az://`` alike) holds the folder layout,
``<prefix>/<name>/<version>/...``, plus one object per version that its publisher writes last:
``_published.json``, the list of the version's files with their sizes and sha256. A version
without it does not exist (an upload in progress, or abandoned). Training publishes
(``training/publish_remote.py``), serving mirrors (``service/storage.py``); both open the store
here, with fsspec's client (s3fs, gcsfs, adlfs) and each cloud's standard credential chain; an
S3-compatible store's address comes from ``AWS_ENDPOINT_URL``, which botocore reads itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

MARKER = "_published.json"
MARKER_FORMAT = 1
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://(.+)$")
CHUNK = 1 << 20
# botocore's defaults (60 s timeouts, more retries) would stall every reload on a dead endpoint
_S3_OPTIONS = {
    "config_kwargs": {
        "connect_timeout": 5,
        "read_timeout": 30,
        "retries": {"max_attempts": 3, "mode": "standard"},
    }
}
# refused or missing credentials (fsspec maps S3's 403s to PermissionError; these are the rest)
_DENIED_NAMES = {
    "NoCredentialsError",
    "PartialCredentialsError",
    "ClientAuthenticationError",
    "CredentialsError",
    "RefreshError",
    "DefaultCredentialsError",
}


class StoreDenied(Exception):
    """The store refused the credentials (or none were found); ``str()`` is one line."""


class BadVersion(Exception):
    """A published version whose files do not match its marker."""


def is_url(location: object) -> bool:
    """Whether ``--models``/``--out`` names an object store rather than a folder."""
    return isinstance(location, str) and _URL.match(location) is not None


def default_cache(url: str) -> Path:
    """A cache folder per bucket URL and user, under the temp directory (writable in the image)."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"visor-models-{os.getuid()}" / digest


def open_store(url: str) -> tuple[Any, str]:
    """fsspec file system and the path of ``url`` in it; ImportError names the missing client."""
    import fsspec

    scheme = _URL.match(url).group(1)  # type: ignore[union-attr]
    options: dict[str, Any] = dict(_S3_OPTIONS) if scheme in ("s3", "s3a") else {}
    # a fresh client per process (safe after fork), no listing cache (each poll sees the bucket)
    fs, root = fsspec.core.url_to_fs(
        url, skip_instance_cache=True, use_listings_cache=False, **options
    )
    return fs, root.rstrip("/")


def denied(exc: BaseException) -> bool:
    return isinstance(exc, PermissionError) or any(
        t.__name__ in _DENIED_NAMES for t in type(exc).__mro__
    )


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def check_access(url: str) -> str | None:
    """At start: StoreDenied for refused credentials; a warning (or None) for anything else.

    An unreachable store or a missing bucket is not fatal: the server starts not ready and the
    poll keeps trying, as for a folder that does not exist yet.
    """
    try:
        fs, root = open_store(url)
    except ImportError as exc:
        raise StoreDenied(f"cannot open {url}: {exc}") from None
    except ValueError as exc:
        raise StoreDenied(f"cannot open {url}: {one_line(exc)}") from None
    try:
        fs.ls(root, detail=False)
    except FileNotFoundError:
        return None  # an empty prefix (or no bucket yet): told apart at the first poll
    except Exception as exc:  # noqa: BLE001 - classified below
        if denied(exc):
            raise StoreDenied(
                f"the model store {url} refused the credentials ({one_line(exc)}): set them "
                "through the standard chain (for S3: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE or an instance/pod role; AWS_ENDPOINT_URL for an S3-compatible store)"
            ) from None
        return f"model store {url} unreachable ({one_line(exc)}): not ready until it answers"
    return None


def manifest(folder: Path) -> dict[str, Any]:
    """The marker's content for a version folder: every file, its size and sha256."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MARKER:
            continue
        files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return {"format": MARKER_FORMAT, "files": files}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def parse_marker(raw: bytes) -> dict[str, dict[str, Any]]:
    """The marker's files, refusing paths that would leave the version folder."""
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT:
        raise BadVersion(f"{MARKER} is not format {MARKER_FORMAT}")
    files = data.get("files")
    if not isinstance(files, dict) or "metadata.json" not in files:
        raise BadVersion(f"{MARKER} lists no metadata.json")
    for rel, entry in files.items():
        parts = PurePosixPath(rel).parts
        if rel.startswith("/") or ".." in parts or not parts or rel == MARKER:
            raise BadVersion(f"{MARKER} lists an unsafe path {rel!r}")
        if not isinstance(entry, dict) or not {"size", "sha256"} <= entry.keys():
            raise BadVersion(f"{MARKER} entry {rel!r} needs size and sha256")
    return files
