"""``--out s3://bucket/prefix`` (gs://, az://): publish a version so no reader sees it half written.

The version is built in a local staging folder exactly as for a folder repository, then:

1. a version number is claimed: the next one after every version in the bucket (complete or not),
   by creating ``<name>/<version>/_claim`` only if it does not exist yet (a conditional write:
   S3's ``If-None-Match: *``, fsspec's ``"xb"`` mode); a publisher that loses the race takes the
   next number;
2. every file is uploaded under ``<name>/<version>/``;
3. ``_published.json``, every file's size and sha256 (``contract.storage.manifest``), is written
   last.

Servers (service/storage.py) ignore a version until its ``_published.json`` exists and check
every file against it. A publisher killed before step 3 leaves a version that is never served.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contract.metadata import METADATA_FILE, ModelMetadata
from contract.storage import MARKER, denied, manifest, one_line, open_store
from training.errors import ExportError

log = logging.getLogger(__name__)
CLAIM = "_claim"


class PublishError(ExportError):
    """The bucket cannot be written: refused credentials, unreachable store, missing client."""


def _store(url: str) -> tuple[Any, str]:
    try:
        return open_store(url)
    except (ImportError, ValueError) as exc:
        raise PublishError(f"cannot open {url}: {one_line(exc)}") from None


def _explain(url: str, exc: Exception) -> PublishError:
    if denied(exc):
        return PublishError(
            f"the model store {url} refused the credentials ({one_line(exc)}): set them through "
            "the standard chain (for S3: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
            "an instance role; AWS_ENDPOINT_URL for an S3-compatible store)"
        )
    return PublishError(f"cannot publish to {url}: {one_line(exc)}")


def check_writable(url: str) -> None:
    """Fail in a second, before training, when the bucket cannot be read with these credentials."""
    fs, root = _store(url)
    try:
        fs.ls(root, detail=False)
    except FileNotFoundError:
        bucket = root.split("/", 1)[0]
        try:
            exists = fs.exists(bucket)
        except Exception as exc:  # noqa: BLE001 - classified by _explain
            raise _explain(url, exc) from None
        if not exists:
            raise PublishError(f"cannot publish to {url}: bucket {bucket!r} does not exist")
    except Exception as exc:  # noqa: BLE001 - classified by _explain
        raise _explain(url, exc) from None


def next_version(fs: Any, model_prefix: str) -> int:
    try:
        names = [e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(model_prefix, detail=False)]
    except FileNotFoundError:
        return 1
    return max((int(n) for n in names if n.isdigit() and int(n) > 0), default=0) + 1


def claim(fs: Any, model_prefix: str) -> int:
    """A version number no other publisher holds: the claim object is created only if absent."""
    note = json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "at": datetime.now(UTC).isoformat()}
    ).encode()
    while True:
        version = next_version(fs, model_prefix)
        try:
            with fs.open(f"{model_prefix}/{version}/{CLAIM}", "xb") as f:
                f.write(note)
        except FileExistsError:
            continue  # another publisher took this number between listing and claiming
        return version


def upload_version(fs: Any, prefix: str, folder: Path) -> None:
    """Every file of ``folder`` under ``prefix``, then the marker that makes the version exist."""
    marker = manifest(folder)
    for rel in marker["files"]:
        fs.put_file(str(folder / rel), f"{prefix}/{rel}")
    fs.pipe_file(f"{prefix}/{MARKER}", json.dumps(marker, indent=1).encode())


def publish_remote(
    url: str,
    name: str,
    fill: Callable[[Path], Any],
    finish: Callable[[Path, int], ModelMetadata],
) -> str:
    """``export.publish`` for a bucket: the URL of the published version."""
    fs, root = _store(url)
    base = Path(tempfile.mkdtemp(prefix="visor-publish-"))
    try:
        tmp = base / "version"
        tmp.mkdir()
        fill(tmp)
        model_prefix = f"{root}/{name}"
        try:
            version = claim(fs, model_prefix)
        except Exception as exc:  # noqa: BLE001 - classified by _explain
            raise _explain(url, exc) from None
        metadata = finish(tmp, version)
        (tmp / METADATA_FILE).write_text(metadata.model_dump_json(indent=2))
        try:
            upload_version(fs, f"{model_prefix}/{version}", tmp)
        except Exception as exc:  # noqa: BLE001 - classified by _explain
            raise _explain(url, exc) from None
    finally:
        shutil.rmtree(base, ignore_errors=True)
    published = f"{url.rstrip('/')}/{name}/{version}"
    log.info("published %s", published)
    return published


def publish_folder(folder: Path, url: str) -> str:
    """Copy a published version folder into a bucket as the model's next version there."""
    from contract.metadata import load_metadata

    try:
        meta = load_metadata(folder)
    except FileNotFoundError:
        raise PublishError(f"{folder} has no {METADATA_FILE}: pass a version folder") from None
    check_writable(url)

    def fill(tmp: Path) -> None:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)

    def finish(tmp: Path, version: int) -> ModelMetadata:
        # the version number is the bucket's next one; artifacts and their sha256 are unchanged
        return meta.model_copy(update={"version": version})

    return publish_remote(url, meta.name, fill, finish)


def add_publish_parser(sub: Any) -> None:
    p = sub.add_parser(
        "publish",
        help="copy a version folder into a bucket (s3://, gs://, az://) as its next version",
        description="Upload VERSION_DIR (e.g. models/digits/3) to OUT/NAME/<next version>/ the "
        "way train and import publish there: files first, the _published.json marker last.",
    )
    p.add_argument("version_dir", type=Path, help="a published version folder")
    p.add_argument("--out", required=True, help="the bucket: s3://bucket/prefix (gs://, az://)")


def run_publish_command(args: Any) -> int:
    from contract.storage import is_url

    if not is_url(args.out):
        raise PublishError(f"--out {args.out!r} is not a bucket URL (s3://bucket/prefix)")
    print(f"published {publish_folder(args.version_dir, args.out)}")
    return 0
