"""Serving from object storage: a local mirror of the versions a bucket publishes.

The bucket's layout and its ``_published.json`` markers are ``contract/storage.py``'s. The rule
every reader keeps:

* a version without ``_published.json`` does not exist (an upload in progress, or abandoned);
* a version is downloaded into a private staging folder of the local cache, each file checked
  against the marker, and only then renamed into ``<cache>/<name>/<version>/``;
* the repository scans the cache exactly as it scans a folder, and loads a version only after its
  own checks (metadata.json's sha256, the golden outputs).

A store that is unreachable, refuses the credentials or goes away mid-download changes nothing in
the cache: what serves keeps serving, and the next poll tries again. Only the versions the version
policy wants are downloaded; a cached version leaves the cache when its marker leaves the bucket,
or when the policy no longer wants it, this process no longer serves it, and it is not the newest
version older than the wanted ones (kept: another worker may still serve it, and it serves again
if its successor fails to load).

The client is fsspec's (s3fs, gcsfs, adlfs) with each cloud's standard credential chain; an
S3-compatible store's address comes from ``AWS_ENDPOINT_URL``, which botocore reads itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from contract.storage import (
    CHUNK,
    MARKER,
    BadVersion,
    StoreDenied,
    denied,
    one_line,
    open_store,
    parse_marker,
)

log = logging.getLogger(__name__)

ROLLOUT_FILE = "rollout.yaml"  # service/rollout/spec.py reads it from the cache


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
        pinned: Callable[[str, list[int]], set[int]] | None = None,
    ) -> None:
        """Download what ``policy`` wants, and the versions ``pinned(name, published)`` names
        (a rollout's, asked once the model's rollout.yaml is in the cache), skipping versions
        that failed to load; drop the rest. Never raises."""
        try:
            with self._locked():
                self._pull(policy, set(failed), set(serving), pinned or (lambda _n, _v: set()))
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
        from contract.metadata import NAME_PATTERN

        found = {}
        for name in names:
            if not re.fullmatch(NAME_PATTERN, name):
                continue
            versions = [int(v) for v in self._listing(fs, f"{root}/{name}") if v.isdigit()]
            found[name] = sorted(v for v in versions if v > 0)
        return found

    def _pull(
        self, policy: Any, failed: set, serving: set, pinned: Callable[[str, list[int]], set[int]]
    ) -> None:
        fs, root = self._store()
        remote = self._models(fs, root)
        keep: set[tuple[str, int]] = set()
        for name, versions in remote.items():
            self._rollout_file(fs, root, name)
            ordered = sorted(versions, reverse=True)
            if policy.specific:
                ordered = [v for v in ordered if v in policy.specific]
            limit = None if policy.specific else policy.latest
            chosen = 0
            for version in ordered:
                if limit is not None and chosen >= limit:
                    break
                if self._fetch_version(fs, root, name, version):
                    keep.add((name, version))
                    if (name, version) not in failed:
                        chosen += 1
            kept = {v for n, v in keep if n == name}
            for version in sorted(pinned(name, versions) & set(versions) - kept):
                if self._fetch_version(fs, root, name, version):
                    keep.add((name, version))
            keep |= self._fallback(fs, root, name, versions, keep - failed)
        self._prune(fs, root, keep, serving)

    def _fetch_version(self, fs: Any, root: str, name: str, version: int) -> bool:
        """Bring one published version into the cache unless it is there; False: not usable."""
        key = (name, version)
        try:
            marker = fs.cat_file(f"{root}/{name}/{version}/{MARKER}")
        except FileNotFoundError:
            return False  # no marker: being uploaded (or abandoned); never served
        if self._bad.get(key) == marker:
            return False
        if self._cached_marker(name, version) != marker:
            try:
                self._download(fs, f"{root}/{name}/{version}", name, version, marker)
            except BadVersion as exc:
                self._bad[key] = marker
                log.error("model %s v%d in %s not served: %s", name, version, self.url, exc)
                return False
        return True

    def _rollout_file(self, fs: Any, root: str, name: str) -> None:
        """The model's rollout.yaml as the bucket has it (or none), replaced whole."""
        target = self.cache / name / ROLLOUT_FILE
        try:
            data = fs.cat_file(f"{root}/{name}/{ROLLOUT_FILE}")
        except FileNotFoundError:
            target.unlink(missing_ok=True)
            return
        with contextlib.suppress(OSError):
            if target.read_bytes() == data:
                return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".rollout-", dir=target.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)

    def _fallback(self, fs: Any, root: str, name: str, published: list[int], good: set) -> set:
        """The newest cached version older than the ones wanted, while still published.

        Another worker may still serve it, and it serves again if the new one fails to load.
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
            files = parse_marker(marker)
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
                while chunk := src.read(CHUNK):
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
