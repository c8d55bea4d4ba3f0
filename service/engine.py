"""The data plane every front-end calls: lookup, readiness, metrics, entry into the batcher.

Front-ends translate wire formats to these calls and back; every decision lives here.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from prometheus_client import CollectorRegistry

from service import codecs
from service.batching import Reservation
from service.decoding import FairDecoder
from service.errors import InternalError, ModelNotFound, ModelUnavailable, VisorError
from service.metrics import Metrics
from service.postprocess import batch_metrics
from service.repository import Repository
from service.settings import Settings
from service.types import Classification, InferOptions, ModelInfo, ModelStatus
from service.versions import LoadedVersion

log = logging.getLogger(__name__)


class Engine:
    """``await start()``, then ``classify_images`` / ``classify_array``; ``await stop()``."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        # NOTE: process-wide, and every server process has one engine per worker. Batches hand
        # over between the event loop and the inference threads through the GIL; at Python's
        # 5 ms a thread returning from ONNX Runtime could wait that long for the loop.
        # MobileNetV2, gRPC c=32: +9% at 1 ms (docs/benchmarks.md, finding 18).
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        self.metrics = Metrics.shared(registry)
        self._infer_pool = ThreadPoolExecutor(settings.inference_threads, "visor-infer")
        self._decode_pool = ThreadPoolExecutor(settings.inference_threads, "visor-decode")
        self._decoder = FairDecoder(
            self._decode_pool,
            settings.decode_tasks_per_request,
            settings.max_request_pixels,
            settings.max_image_pixels,
        )
        self._listeners: list[Callable[[], None]] = []
        self.repository = Repository(settings, self._infer_pool, self.metrics, self._changed)
        self._poller: asyncio.Task | None = None
        self._started = False
        self._stopping = False

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Scan, verify, load and warm up every model, then start the hot-reload poller."""
        if not self.settings.models.is_dir():
            log.warning(
                "model repository %s does not exist: nothing to serve until it does",
                self.settings.models,
            )
        await self.repository.sync()
        self._started = True
        self._changed()
        if self.settings.poll_interval_s > 0:
            self._poller = asyncio.create_task(self.repository.poll(), name="visor-poll")

    async def stop(self) -> None:
        """Refuse new work (ModelUnavailable), let queued and running batches finish."""
        self._stopping = True
        self._changed()
        if self._poller:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        await self.repository.close()
        self._infer_pool.shutdown(wait=False)
        self._decode_pool.shutdown(wait=False)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called (on the loop) whenever readiness of the server or a model may have changed."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    # --- status --------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return not self._stopping

    @property
    def ready(self) -> bool:
        return self._started and not self._stopping and bool(self.repository.serving)

    def models(self) -> list[ModelInfo]:
        return self.repository.infos()

    def model_info(self, name: str, version: int | str | None = None) -> ModelInfo:
        if version in (None, ""):
            lv = self.repository.latest.get(name)
            if lv is not None:
                return self.repository.info(name, lv.version) or lv.info(ModelStatus.READY)
            known = [i for i in self.repository.infos() if i.name == name]
            if not known:
                raise ModelNotFound(f"model {name!r} is not in the repository")
            return max(known, key=lambda i: i.version)
        info = self.repository.info(name, _version_number(name, version))
        if info is None:
            raise ModelNotFound(f"model {name!r} has no version {version!r}")
        return info

    def model_ready(self, name: str, version: int | str | None = None) -> bool:
        if self._stopping:
            return False
        try:
            return self.model_info(name, version).ready
        except ModelNotFound:
            return False

    def record_failure(
        self, name: str, version: int | str | None, protocol: str, err: VisorError
    ) -> None:
        """Count a request a front-end refused before it reached a model (bad wire format)."""
        code = err.grpc_code.name
        # NOTE: a client can send any name: unknown ones share one label value, so the metric's
        # cardinality stays bounded by the repository, not by what clients type.
        if not any(m.name == name for m in self.repository.infos()):
            name, version = "_unknown", None
        elif version not in (None, "") and self.repository.info(name, _safe_int(version)) is None:
            version = "_unknown"
        key = (name, str(version or ""), protocol, code)
        self.metrics.requests.labels(*key).inc()
        self.metrics.failures.labels(*key).inc()

    # --- inference -----------------------------------------------------------------------
    async def classify_images(
        self,
        name: str,
        version: int | str | None,
        images: Sequence[bytes],
        options: InferOptions,
        *,
        protocol: str,
        deadline: float | None = None,
    ) -> Classification:
        """Encoded images → Classification; refused before decoding when they cannot queue."""
        lv = self._lookup_counted(name, version, protocol)
        try:
            codecs.check_batch_size(len(images), self.settings.max_images_per_request)
            # NOTE: admission before decoding: a full queue (or a request larger than it) is
            # refused at once, not after its images waited for and took the decode threads.
            reservation = lv.batcher.reserve(len(images))
        except VisorError as exc:
            lv.metrics.count_request(protocol, exc.grpc_code.name)
            raise
        try:
            try:
                pixels = await self._decoder.decode(images, lv.meta.input)
            except VisorError as exc:
                lv.metrics.count_request(protocol, exc.grpc_code.name)
                raise
            if lv.batcher.closed and version in (None, ""):
                # NOTE: the version was swapped out while we decoded; the newest takes the
                # request when it expects the same input (otherwise its batcher says
                # UNAVAILABLE: retry).
                newer = self._lookup(name, None)
                lv = newer if newer.meta.input == lv.meta.input else lv
            return await self._classify(lv, pixels, options, protocol, deadline, reservation)
        finally:
            reservation.release()  # NOTE: a no-op once the batcher queued the images

    async def classify_array(
        self,
        name: str,
        version: int | str | None,
        pixels: np.ndarray,
        options: InferOptions,
        *,
        protocol: str,
        deadline: float | None = None,
    ) -> Classification:
        """uint8 or float32 ``[N, H, W, C]`` pixels → Classification."""
        lv = self._lookup_counted(name, version, protocol)
        return await self._classify(lv, pixels, options, protocol, deadline)

    def _lookup_counted(self, name: str, version: int | str | None, protocol: str) -> LoadedVersion:
        try:
            return self._lookup(name, version)
        except VisorError as err:
            self.record_failure(name, version, protocol, err)
            raise

    def _lookup(self, name: str, version: int | str | None) -> LoadedVersion:
        if self._stopping:
            raise ModelUnavailable("the server is shutting down; retry on another replica")
        if not self._started:
            raise ModelUnavailable("the server is starting: models are still loading; retry")
        if version in (None, ""):
            lv = self.repository.latest.get(name)
        else:
            lv = self.repository.serving.get(name, {}).get(_version_number(name, version))
        if lv is not None:
            return lv
        info = self.model_info(name, version)  # raises ModelNotFound
        raise ModelUnavailable(
            f"model {name} v{info.version} is {info.status.value}"
            + (f": {info.reason}" if info.reason else "")
        )

    async def _classify(
        self,
        lv: LoadedVersion,
        pixels: np.ndarray,
        options: InferOptions,
        protocol: str,
        deadline: float | None,
        reservation: Reservation | None = None,
    ) -> Classification:
        try:
            pixels = codecs.check_pixels(
                pixels, lv.meta.input, self.settings.max_images_per_request
            )
            k = lv.post.top_k(options)
            thresholds, source = lv.post.thresholds(options)
            truth = (
                lv.post.ground_truth(options.ground_truth, len(pixels))
                if options.ground_truth is not None
                else None
            )
            output = await lv.batcher.submit(pixels, deadline, reservation)
            result = self._result(lv, output, k, thresholds, source, truth)
        except VisorError as exc:
            lv.metrics.count_request(protocol, exc.grpc_code.name)
            raise
        except Exception as exc:
            log.exception("bug while classifying with %s v%d", lv.name, lv.version)
            lv.metrics.count_request(protocol, "INTERNAL")
            raise InternalError(f"internal error: {type(exc).__name__}") from exc
        lv.metrics.count_request(protocol, "OK")
        return result

    def _result(
        self,
        lv: LoadedVersion,
        output: np.ndarray,
        k: int,
        thresholds: np.ndarray,
        source: str,
        truth: np.ndarray | None,
    ) -> Classification:
        probs = lv.post.probabilities(output)
        result = Classification(
            model=lv.name,
            version=lv.version,
            labels=lv.post.labels,
            probabilities=probs,
            k=k,
            thresholds=thresholds,
            threshold_source=source,
            device=lv.backend.device,
            metrics=batch_metrics(probs, thresholds, truth, lv.post.labels)
            if truth is not None
            else None,
        )
        lv.metrics.count_predicted(result.hits)
        lv.metrics.images.inc(len(probs))
        return result


def _version_number(name: str, version: int | str) -> int:
    try:
        return int(version)
    except (TypeError, ValueError):
        raise ModelNotFound(
            f"model {name!r} has no version {version!r} (versions are integers)"
        ) from None


def _safe_int(version: int | str | None) -> int:
    try:
        return int(version)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
