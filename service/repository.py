"""The model repository: scan ``models/<name>/<version>/``, verify, load, warm up, hot reload.

The versions that serve live in one dict per model that is replaced, never mutated, on the event
loop thread, so a request's lookup is a plain dict read and a swap is atomic for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from contract.golden import GoldenMismatch, verify_golden
from contract.metadata import METADATA_FILE, ModelMetadata, load_metadata, sha256_path
from service.backends import load_backend
from service.batching import AdaptiveBatcher, BatchPolicy
from service.metrics import Metrics, VersionMetrics
from service.monitoring import VersionMonitor
from service.monitoring.receipts import Receipts
from service.policy import VersionPolicy
from service.rollout import Rollouts, RolloutSpec, SpecError, read_spec
from service.settings import Settings
from service.storage import Mirror
from service.types import ModelInfo, ModelStatus
from service.versions import LoadedVersion, batch_limit, warmup_sizes

log = logging.getLogger(__name__)


class LoadError(Exception):
    """A version that cannot serve: bad metadata, checksum mismatch, backend failure."""


def scan(root: Path) -> dict[str, dict[int, Path]]:
    """Model name → version → folder; folders whose names are not positive integers are skipped."""
    found: dict[str, dict[int, Path]] = {}
    if not root.is_dir():
        return found
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = {
            int(v.name): v
            for v in model_dir.iterdir()
            if v.is_dir() and v.name.isdigit() and int(v.name) > 0
        }
        if versions:
            found[model_dir.name] = versions
    return found


def fingerprint(version_dir: Path) -> tuple[int, ...]:
    """Changes when the version's files change: a failed version is retried only then."""
    stats = [p.stat() for p in sorted(version_dir.rglob("*")) if p.is_file()]
    return tuple(x for s in stats for x in (s.st_mtime_ns, s.st_size))


class Repository:
    """Owns every version's lifecycle; the engine asks it for the serving ones."""

    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        metrics: Metrics,
        receipts: Receipts,
        rollouts: Rollouts,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._receipts = receipts
        self.rollouts = rollouts
        self._executor = executor
        self._metrics = metrics
        self._on_change = on_change
        self._policy = VersionPolicy.parse(settings.version_policy)
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="visor-load")
        self.serving: dict[str, dict[int, LoadedVersion]] = {}  # replaced, never mutated
        self.latest: dict[str, LoadedVersion] = {}
        self._infos: dict[tuple[str, int], ModelInfo] = {}
        self._failed: dict[tuple[str, int], tuple[int, ...]] = {}
        self._prints: dict[tuple[str, int], tuple[int, ...]] = {}  # this scan's fingerprints
        self._sync_lock = asyncio.Lock()
        # a bucket is mirrored into settings.models (the cache) before each scan.
        self._mirror = Mirror(settings.models_url, settings.models) if settings.models_url else None

    def infos(self) -> list[ModelInfo]:
        return [self._infos[k] for k in sorted(self._infos)]

    def info(self, name: str, version: int) -> ModelInfo | None:
        return self._infos.get((name, version))

    async def sync(self) -> None:
        """Bring the loaded versions in line with the folder and the version policy."""
        async with self._sync_lock:
            # File-system walks run in the loader thread, never on the event loop.
            loop = asyncio.get_running_loop()
            found, self._prints, specs = await loop.run_in_executor(
                self._loader, self._scan, list(self._failed)
            )
            self.rollouts.update(specs, {name: sorted(vs) for name, vs in found.items()})
            for name, versions in found.items():
                await self._sync_model(name, versions)
            for name in list(self.serving):
                if name not in found:
                    await self._sync_model(name, {})

    async def poll(self) -> None:
        """Hot reload: ``sync`` every ``poll_interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self._settings.poll_interval_s)
            try:
                await self.sync()
            except Exception:
                log.exception("model repository poll failed")

    async def close(self) -> None:
        for name in list(self.serving):
            for lv in list(self.serving[name].values()):
                await self._unload(lv, keep_info=True)
        self._loader.shutdown(wait=False)

    # --- private steps -------------------------------------------------------------------
    async def _sync_model(self, name: str, versions: dict[int, Path]) -> None:
        while True:
            usable = [v for v in versions if not self._still_failed(name, v)]
            # the version policy's, and those the model's rollout needs (current, candidate)
            wanted = set(self._policy.select(usable)) | (self.rollouts.pinned(name) & set(usable))
            missing = sorted(wanted - set(self.serving.get(name, {})), reverse=True)
            if not missing:
                break
            await self._load(name, missing[0], versions[missing[0]])
        for v, lv in list(self.serving.get(name, {}).items()):
            if v not in wanted:
                await self._unload(lv)
        for key in [k for k in self._failed if k[0] == name and k[1] not in versions]:
            del self._failed[key]
            self._infos.pop(key, None)

    def _scan(self, failed: list[tuple[str, int]]) -> tuple[dict, dict, dict]:
        if self._mirror is not None:
            serving = [(n, v) for n, versions in self.serving.items() for v in versions]
            self._mirror.pull(self._policy, failed, serving, self._rollout_versions)
        found = scan(self._settings.models)
        prints = {
            key: fingerprint(found[key[0]][key[1]])
            for key in failed
            if key[1] in found.get(key[0], {})
        }
        specs: dict[str, RolloutSpec | SpecError | None] = {}
        for name in found:
            try:
                specs[name] = read_spec(self._settings.models / name)
            except SpecError as exc:
                specs[name] = exc
        return found, prints, specs

    def _rollout_versions(self, name: str, published: list[int]) -> set[int]:
        """What the mirror must download for ``name``'s rollout: the pair its rollout.yaml names
        (just fetched: a cold replica has both before it serves) and what the rollout holds."""
        try:
            spec = read_spec(self._settings.models / name)
        except SpecError:
            spec = None  # the last valid spec holds: its versions are in pinned()
        pair = spec.pair(published) if spec is not None else None
        return set(pair or ()) | self.rollouts.pinned(name)

    def _still_failed(self, name: str, version: int) -> bool:
        old = self._failed.get((name, version))
        return old is not None and old == self._prints.get((name, version))

    async def _load(self, name: str, version: int, path: Path) -> None:
        key = (name, version)
        self._infos[key] = ModelInfo(
            name, version, ModelStatus.LOADING, backend=self._settings.backend
        )
        self._on_change()
        loop = asyncio.get_running_loop()
        try:
            lv = await loop.run_in_executor(self._loader, self._load_blocking, name, version, path)
        except Exception as exc:  # noqa: BLE001 - reported as the version's status
            prints = await loop.run_in_executor(self._loader, fingerprint, path)
            self._fail(name, version, prints, exc)
            return
        self._failed.pop(key, None)
        self._swap(name, {**self.serving.get(name, {}), version: lv})
        self._infos[key] = lv.info(ModelStatus.READY)
        self._metrics.model_ready.labels(name, str(version)).set(1)
        self._metrics.provider.labels(name, str(version), lv.backend.device).set(1)
        log.info("model %s v%d ready on %s (%s)", name, version, lv.backend.device, lv.kind)

    def _fail(self, name: str, version: int, prints: tuple[int, ...], exc: Exception) -> None:
        plain = isinstance(exc, (LoadError, GoldenMismatch))
        reason = str(exc) if plain else f"{type(exc).__name__}: {exc}"
        self._failed[(name, version)] = prints
        self._prints[(name, version)] = prints
        prev = self._infos.get((name, version))
        self._infos[(name, version)] = ModelInfo(
            name,
            version,
            ModelStatus.FAILED,
            reason=reason,
            metadata=prev.metadata if prev else None,
            backend=self._settings.backend,
        )
        self._metrics.load_failures.labels(name, str(version)).inc()
        self._metrics.model_ready.labels(name, str(version)).set(0)
        log.error("model %s v%d failed to load, not serving it: %s", name, version, reason)
        self._on_change()

    def _load_blocking(self, name: str, version: int, path: Path) -> LoadedVersion:
        settings = self._settings
        try:
            meta = load_metadata(path)
        except FileNotFoundError:
            raise LoadError(f"{path / METADATA_FILE} is missing") from None
        except ValidationError as exc:
            raise LoadError(f"{path / METADATA_FILE} is invalid: {exc}") from None
        if meta.name != name or meta.version != version:
            raise LoadError(
                f"metadata says {meta.name} v{meta.version}, folder is {name}/{version}"
            )
        kind = settings.backend
        artifact = meta.artifacts.get(kind)
        if artifact is None:
            raise LoadError(
                f"metadata lists no {kind} artifact (it has {', '.join(sorted(meta.artifacts))}; "
                "an imported ONNX model has only onnx): serve it with VISOR_BACKEND=onnx"
            )
        digest = sha256_path(path / artifact.path) if (path / artifact.path).exists() else "missing"
        if digest != artifact.sha256:
            raise LoadError(
                f"sha256 of {artifact.path} is {digest}, metadata says {artifact.sha256}"
            )
        backend = load_backend(kind, path, meta, settings)
        limit = batch_limit(settings, backend.device)
        try:
            for size in warmup_sizes(settings, limit):
                backend.run(_zeros(meta, size))
            if meta.golden is not None:
                verify_golden(path, meta.golden, backend.run, limit, settings.golden_tolerance)
        except BaseException:
            backend.close()  # A version that cannot serve frees its session at once
            raise
        vm = VersionMetrics(self._metrics, name, version)
        vm.set_labels(list(meta.labels))
        policy = BatchPolicy(
            limit,
            settings.max_queue_delay_ms / 1000.0,
            settings.max_queue_size,
            settings.inference_threads,
            settings.inline_lone_requests,
        )
        batcher = AdaptiveBatcher(f"{name} v{version}", backend.run, self._executor, policy, vm)
        monitor = (
            VersionMonitor(meta, self._metrics, settings, self._receipts)
            if settings.monitoring
            else None
        )
        return LoadedVersion(
            name, version, path, meta, kind, backend, batcher, vm, settings, monitor
        )

    def _swap(self, name: str, versions: dict[int, LoadedVersion]) -> None:
        if versions:
            self.serving = {**self.serving, name: versions}
            self.latest = {**self.latest, name: versions[max(versions)]}
        else:
            self.serving = {k: v for k, v in self.serving.items() if k != name}
            self.latest = {k: v for k, v in self.latest.items() if k != name}
        self._on_change()

    async def _unload(self, lv: LoadedVersion, keep_info: bool = False) -> None:
        key = (lv.name, lv.version)
        rest = {v: x for v, x in self.serving.get(lv.name, {}).items() if v != lv.version}
        self._swap(lv.name, rest)
        self._infos[key] = replace(self._infos[key], status=ModelStatus.UNLOADING)
        self._metrics.model_ready.labels(lv.name, str(lv.version)).set(0)
        log.info("model %s v%d removed: draining, then unloading", lv.name, lv.version)
        await lv.batcher.drain()
        lv.backend.close()
        self._metrics.provider.labels(lv.name, str(lv.version), lv.backend.device).set(0)
        if keep_info:
            self._infos[key] = replace(self._infos[key], status=ModelStatus.UNLOADED)
        else:
            self._infos.pop(key, None)


def _zeros(meta: ModelMetadata, size: int) -> np.ndarray:
    i = meta.input
    return np.zeros((size, i.height, i.width, i.channels), dtype=np.float32)
