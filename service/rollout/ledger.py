"""Where every process of every replica pools a rollout's evidence, and reads its decision.

Layout, under ``VISOR_ROLLOUT_STATE`` (a folder on a shared volume, or a bucket URL)::

    <model>/<current>-<candidate>/evidence-<process>.json   each process's own counts, rewritten
    <model>/<current>-<candidate>/decision-<ns>-<process>.json   a decision, written once

Each process writes only its own evidence file, whole (a rename on a folder, one PUT on a bucket),
so no write races another. Every process sums all the evidence files, so each judges the fleet's
feedback whichever replica received it; a restarted process's old file stays and keeps counting.
The first decision (the smallest name: nanoseconds since the epoch, then the process) holds
for every process: one that decided later in the same moment adopts it at its next sync.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from contract.storage import is_url, one_line, open_store

log = logging.getLogger(__name__)


def process_id() -> str:
    """This process among every replica's: host, pid, and a random tail (pids repeat)."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class Ledger:
    """Read and write one location; every call may raise OSError (the caller keeps going)."""

    def __init__(self, location: str | Path, process: str | None = None) -> None:
        self.location = str(location)
        self.process = process or process_id()
        self._fs: Any = None
        self._root = ""

    def _store(self) -> tuple[Any, str]:
        if self._fs is None:
            if is_url(self.location):
                self._fs, self._root = open_store(self.location)
            else:
                import fsspec

                self._fs, self._root = fsspec.filesystem("file"), self.location.rstrip("/")
        return self._fs, self._root

    def _folder(self, model: str, pair: tuple[int, int]) -> str:
        return f"{self._store()[1]}/{model}/{pair[0]}-{pair[1]}"

    def _put(self, path: str, data: bytes) -> None:
        fs, _ = self._store()
        if is_url(self.location):
            fs.pipe_file(path, data)  # one PUT: an object is whole or absent
            return
        folder = Path(path).parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # readers see the old file or the new, never half of one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def publish(self, model: str, pair: tuple[int, int], evidence: dict[str, Any]) -> None:
        path = f"{self._folder(model, pair)}/evidence-{self.process}.json"
        self._put(path, json.dumps(evidence, separators=(",", ":")).encode())

    def decide(self, model: str, pair: tuple[int, int], decision: dict[str, Any]) -> None:
        path = f"{self._folder(model, pair)}/decision-{time.time_ns():020d}-{self.process}.json"
        self._put(path, json.dumps(decision).encode())

    def gather(
        self, model: str, pair: tuple[int, int]
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Every other process's evidence, and the first decision (None while there is none)."""
        fs, _ = self._store()
        folder = self._folder(model, pair)
        try:
            names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False))
        except FileNotFoundError:
            return [], None
        evidence = []
        own = f"evidence-{self.process}.json"
        for name in names:
            if not (name.startswith("evidence-") and name.endswith(".json")) or name == own:
                continue
            if (item := self._read(f"{folder}/{name}")) is not None:
                evidence.append(item)
        decisions = [n for n in names if n.startswith("decision-") and n.endswith(".json")]
        for name in decisions:  # the first readable one
            if (item := self._read(f"{folder}/{name}")) is not None:
                return evidence, item
        return evidence, None

    def _read(self, path: str) -> dict[str, Any] | None:
        fs, _ = self._store()
        try:
            item = json.loads(fs.cat_file(path))
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("rollout state %s is unreadable, skipped: %s", path, one_line(exc))
            return None
        return item if isinstance(item, dict) else None
