"""Model repositories in object storage: ``--models s3://bucket/prefix`` (``gs://``, ``az://`` alike).

The bucket holds the folder layout, ``<prefix>/<name>/<version>/...``, plus one object per version
that its publisher writes last (``training/publish_remote.py``): ``_published.json``, the list of
the version's files with their sizes and sha256. The rule every reader keeps:

* a version without ``_published.json`` does not exist (an upload in progress, or abandoned);
* a version is downloaded into a private staging folder of the local cache, each file checked
  against the marker, and only then renamed into ``<cache>/<name>/<version>/``;
* the repository scans the cache exactly as it scans a folder, and loads a version only after its
  own checks (metadata.json's sha256, the golden outputs).

A store that is unreachable, refuses the credentials or goes away mid-download changes nothing in
the cache: what serves keeps serving, and the next poll tries again. Only the versions the version
policy wants are downloaded; a cached version leaves the cache when its marker leaves the bucket,
or when the policy no longer wants it, this process no longer serves it, and it is not the newest
version older than the wanted ones (kept: a sibling worker may still serve it, and it serves again
if its successor fails to load).

The client is fsspec's (s3fs, gcsfs, adlfs) with each cloud's standard credential chain; an
S3-compatible store's address comes from ``AWS_ENDPOINT_URL``, which botocore reads itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)

MARKER = "_published.json"
MARKER_FORMAT = 1
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://(.+)$")
_CHUNK = 1 << 20
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
        files[rel] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    return {"format": MARKER_FORMAT, "files": files}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _parse_marker(raw: bytes) -> dict[str, dict[str, Any]]:
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


class Mirror:
    """Keeps ``cache`` in line with the complete versions in ``url`` that the policy wants.

    ``pull`` runs in the repository's loader thread before each scan and never raises: a store
    problem is logged (once per distinct problem) and leaves the cache as it was.
    """

    def __init__(self, url: str, cache: Path) -> None:
        self.url = url
        self.cache = cache
        self.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fs: Any = None
        self._fs_pid = 0
        self._root = ""
        self._problem: str | None = None
        self._bad: dict[tuple[str, int], bytes] = {}  # refused markers, until they change

    def pull(
        self,
        policy: Any,
        failed: Iterable[tuple[str, int]] = (),
        serving: Iterable[tuple[str, int]] = (),
    ) -> None:
        """Download what ``policy`` wants (skipping versions that failed to load), drop the rest."""
        try:
            with self._locked():
                self._pull(policy, set(failed), set(serving))
        except StoreDenied as exc:
            self._report(str(exc))
        except Exception as exc:  # noqa: BLE001 - any store fault: keep serving the cache
            if denied(exc):
                self._report(
                    f"model store {self.url} refused the credentials ({one_line(exc)}); "
                    "serving the versions already downloaded"
                )
            else:
                self._report(
                    f"model store {self.url} unavailable ({one_line(exc)}); "
                    "serving the versions already downloaded, retrying at the next poll"
                )
        else:
            self._report(None)

    # --- private -------------------------------------------------------------------------
    def _report(self, problem: str | None) -> None:
        if problem == self._problem:
            return
        if problem:
            log.warning("%s", problem)
        elif self._problem:
            log.info("model store %s reachable again", self.url)
        self._problem = problem

    def _store(self) -> tuple[Any, str]:
        if self._fs is None or self._fs_pid != os.getpid():
            self._fs, self._root = open_store(self.url)
            self._fs_pid = os.getpid()
        return self._fs, self._root

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # the workers of one server share the cache: one pulls, the others find it done
        with open(self.cache / ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _listing(self, fs: Any, path: str) -> list[str]:
        """Names of the folders directly under ``path``."""
        entries = fs.ls(path, detail=True)
        return sorted(
            PurePosixPath(e["name"].rstrip("/")).name
            for e in entries
            if e.get("type") == "directory"
        )

    def _models(self, fs: Any, root: str) -> dict[str, list[int]]:
        try:
            names = self._listing(fs, root)
        except FileNotFoundError:
            bucket = root.split("/", 1)[0]
            if not fs.exists(bucket):
                raise FileNotFoundError(f"bucket {bucket!r} does not exist") from None
            return {}  # an existing bucket with nothing under the prefix: no models
        from service.metadata import NAME_PATTERN

        found = {}
        for name in names:
            if not re.fullmatch(NAME_PATTERN, name):
                continue
            versions = [int(v) for v in self._listing(fs, f"{root}/{name}") if v.isdigit()]
            found[name] = sorted(v for v in versions if v > 0)
        return found

    def _pull(self, policy: Any, failed: set, serving: set) -> None:
        fs, root = self._store()
        remote = self._models(fs, root)
        keep: set[tuple[str, int]] = set()
        for name, versions in remote.items():
            ordered = sorted(versions, reverse=True)
            if policy.specific:
                ordered = [v for v in ordered if v in policy.specific]
            limit = None if policy.specific else policy.latest
            chosen = 0
            for version in ordered:
                if limit is not None and chosen >= limit:
                    break
                key = (name, version)
                try:
                    marker = fs.cat_file(f"{root}/{name}/{version}/{MARKER}")
                except FileNotFoundError:
                    continue  # no marker: being uploaded (or abandoned); never served
                if self._bad.get(key) == marker:
                    continue
                if self._cached_marker(name, version) != marker:
                    try:
                        self._download(fs, f"{root}/{name}/{version}", name, version, marker)
                    except BadVersion as exc:
                        self._bad[key] = marker
                        log.error("model %s v%d in %s not served: %s", name, version, self.url, exc)
                        continue
                keep.add(key)
                if key not in failed:
                    chosen += 1
            keep |= self._fallback(fs, root, name, versions, keep - failed)
        self._prune(fs, root, keep, serving)

    def _fallback(self, fs: Any, root: str, name: str, published: list[int], good: set) -> set:
        """The newest cached version older than the ones wanted, while still published.

        A sibling worker may still serve it, and it serves again if the new one fails to load.
        """
        wanted = [v for n, v in good if n == name]
        model_dir = self.cache / name
        if not wanted or not model_dir.is_dir():
            return set()
        older = [
            int(p.name)
            for p in model_dir.iterdir()
            if p.name.isdigit() and int(p.name) < min(wanted) and int(p.name) in published
        ]
        if older and fs.exists(f"{root}/{name}/{max(older)}/{MARKER}"):
            return {(name, max(older))}
        return set()

    def _cached_marker(self, name: str, version: int) -> bytes | None:
        try:
            return (self.cache / name / str(version) / MARKER).read_bytes()
        except OSError:
            return None

    def _download(self, fs: Any, prefix: str, name: str, version: int, marker: bytes) -> None:
        try:
            files = _parse_marker(marker)
        except (ValueError, BadVersion) as exc:
            raise BadVersion(f"{MARKER}: {exc}") from None
        incoming = self.cache / ".incoming"
        incoming.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{name}-{version}-", dir=incoming))
        try:
            for rel, entry in files.items():
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                size, digest = self._fetch(fs, f"{prefix}/{rel}", target)
                if size != entry["size"] or digest != entry["sha256"]:
                    raise BadVersion(
                        f"{rel} is {size} bytes with sha256 {digest}, {MARKER} says "
                        f"{entry['size']} bytes with sha256 {entry['sha256']}"
                    )
            (staging / MARKER).write_bytes(marker)
            self._place(staging, name, version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("downloaded model %s v%d from %s into %s", name, version, self.url, self.cache)

    def _fetch(self, fs: Any, path: str, target: Path) -> tuple[int, str]:
        digest, size = hashlib.sha256(), 0
        try:
            with fs.open(path, "rb") as src, target.open("wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            raise BadVersion(f"{path} is listed in {MARKER} but missing") from None
        return size, digest.hexdigest()

    def _place(self, staging: Path, name: str, version: int) -> None:
        """Rename the checked version into place; a replaced one is moved aside first."""
        final = self.cache / name / str(version)
        final.parent.mkdir(exist_ok=True)
        if final.exists():
            self._discard(final)
        os.rename(staging, final)

    def _discard(self, folder: Path) -> None:
        # renamed out of the scanned tree first, so no scan sees a half-deleted version.
        aside = Path(tempfile.mkdtemp(prefix="old-", dir=self.cache / ".incoming"))
        os.rename(folder, aside / "v")
        shutil.rmtree(aside, ignore_errors=True)

    def _prune(self, fs: Any, root: str, keep: set, serving: set) -> None:
        (self.cache / ".incoming").mkdir(exist_ok=True)
        for model_dir in [p for p in self.cache.iterdir() if p.is_dir()]:
            if model_dir.name.startswith("."):
                continue
            for version_dir in [v for v in model_dir.iterdir() if v.is_dir()]:
                key = (
                    (model_dir.name, int(version_dir.name)) if version_dir.name.isdigit() else None
                )
                if key in keep:
                    continue
                # kept while serving here, unless the operator withdrew it from the bucket
                if key in serving and fs.exists(f"{root}/{key[0]}/{key[1]}/{MARKER}"):
                    continue
                self._discard(version_dir)
                log.info("removed %s from the model cache", version_dir)
            with contextlib.suppress(OSError):
                model_dir.rmdir()  # only when empty
