"""The data plane every front-end calls: lookup, readiness, metrics, entry into the batcher.

Front-ends translate wire formats to these calls and back; every decision lives here.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import secrets
import sys
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from service.batching import Reservation
from service.decoding import FairDecoder
from service.errors import (
    InternalError,
    ModelNotFound,
    ModelUnavailable,
    UnknownRequest,
    VisorError,
)
from service.limits import check_batch_size, check_pixels
from service.metrics import Metrics
from service.monitoring import FeedbackResult
from service.monitoring.receipts import Receipts
from service.postprocess import batch_metrics
from service.protocol import InferCall, InferRequest, params, parse
from service.repository import Repository
from service.rollout import Ledger, Rollouts
from service.rollout.shadow import Shadows
from service.settings import Settings
from service.types import Classification, InferOptions, ModelInfo, ModelStatus
from service.versions import LoadedVersion

log = logging.getLogger(__name__)


class Engine:
    """``await start()``, then ``classify_images`` / ``classify_array``; ``await stop()``."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        # Process-wide (one engine per process): batches hand over between the event loop and
        # The inference threads through the GIL, and a shorter interval makes a thread back
        # From ONNX Runtime wait less for the loop (measured in docs/benchmarks.md).
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
        keys = [key.get_secret_value() for key in settings.feedback_keys]
        # Without a configured key, receipts hold within this engine only (docs/monitoring.md).
        ttl = settings.monitor_prediction_ttl_s
        self.receipts = Receipts(keys or [secrets.token_urlsafe(32)], ttl)
        location = settings.rollout_location
        self.rollouts = Rollouts(
            self.metrics, Ledger(location) if location else None, settings.monitor_predictions
        )
        self.rollouts.on_decision = self._changed
        self.repository = Repository(
            settings, self._infer_pool, self.metrics, self.receipts, self.rollouts, self._changed
        )
        self._poller: asyncio.Task | None = None
        self._rollout_poller: asyncio.Task | None = None
        self._shadows = Shadows(self.rollouts)  # candidates answering off the request path
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
        await self.rollouts.sync()  # a decision the fleet already made holds from the start
        if self.settings.gc_freeze:
            # Everything alive now (imports, sessions, the app) lives as long as the process;
            # Frozen, full collections stop walking it and stalling the loop (docs/benchmarks.md).
            gc.freeze()
        self._started = True
        self._changed()
        if self.settings.poll_interval_s > 0:
            self._poller = asyncio.create_task(self.repository.poll(), name="visor-poll")
            self._rollout_poller = asyncio.create_task(
                self.rollouts.poll(self.settings.rollout_sync_s), name="visor-rollouts"
            )

    async def stop(self) -> None:
        """Refuse new work (ModelUnavailable), let queued and running batches finish."""
        self._stopping = True
        self._changed()
        pollers = [t for t in (self._poller, self._rollout_poller) if t is not None]
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        await self._shadows.drain()
        await self.rollouts.sync()  # the last evidence this process took
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
        """The info of one version (default: the newest ready one, else the newest known)."""
        name, version = params.model_name(name), params.version(version)
        if version is None:
            lv = self.repository.latest.get(name)
            if lv is not None:
                return self.repository.info(name, lv.version) or lv.info(ModelStatus.READY)
            known = [i for i in self.repository.infos() if i.name == name]
            if not known:
                raise ModelNotFound(f"model {name!r} is not in the repository")
            return max(known, key=lambda i: i.version)
        info = self.repository.info(name, version)
        if info is None:
            raise ModelNotFound(f"model {name!r} has no version {version!r}")
        return info

    def server_metadata(self) -> dict[str, Any]:
        """OIP server metadata; each front-end adds the extensions of its own wire."""
        return {"name": "visor", "version": _visor_version(), "extensions": ["classification"]}

    def model_metadata(self, name: str, version: int | str | None = None) -> dict[str, Any]:
        """OIP model metadata (``name``, ``versions``, ``platform``, ``inputs``, ``outputs``)."""
        info = self.model_info(name, version)
        if failure := self.load_failure(info.name, info.version):
            raise ModelUnavailable(failure)
        if info.metadata is None:
            raise ModelUnavailable(
                f"model {info.name} v{info.version} has no valid metadata"
                + (f": {info.reason}" if info.reason else "")
            )
        spec, labels = info.metadata.input, info.metadata.labels
        return {
            "name": info.name,
            "versions": [str(m.version) for m in self.models() if m.name == info.name],
            "platform": f"visor_{info.backend or 'onnx'}",
            "inputs": [
                {
                    "name": spec.name,
                    "datatype": "FP32",
                    "shape": [-1, spec.height, spec.width, spec.channels],
                }
            ],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)]},
                {"name": "labels", "datatype": "BYTES", "shape": [-1]},
            ],
            "labels": list(labels),
            # per class: threshold, point estimates, lower bound, support, certified (no curves)
            "thresholds": info.metadata.thresholds.model_dump(mode="json", exclude={"curves"}),
            "rollout": self.rollouts.view(info.name),  # None: the newest version answers
        }

    def load_failure(self, name: str, version: int | str | None = None) -> str:
        """'model x v2 failed to load: <reason>' when that version failed, else ''."""
        try:
            info = self.model_info(name, version)
        except VisorError:
            return ""
        if info.status is not ModelStatus.FAILED:
            return ""
        return f"model {info.name} v{info.version} failed to load: {info.reason}"

    def model_ready(self, name: str, version: int | str | None = None) -> bool:
        if self._stopping:
            return False
        try:
            return self.model_info(name, version).ready
        except ModelNotFound:
            return False  # A malformed name or version still raises InvalidInput

    def record_failure(self, name: Any, version: Any, protocol: str, err: VisorError) -> None:
        """Count a request refused before it reached a model (wire format, options, auth).

        Requests that reach a model are counted by that model's metrics; together these are
        every request on every route, by outcome.
        """
        code = err.grpc_code.name
        # A client can send any name: unknown ones share one label value, so the metric's
        # cardinality stays bounded by the repository, not by what clients type.
        known = {m.name: m for m in self.repository.infos()}
        if not isinstance(name, str) or name not in known:
            name, label = "_unknown", ""
        else:
            try:
                number = params.version(version)
            except VisorError:
                number = -1
            label = "" if number is None else str(number)
            if number is not None and self.repository.info(name, number) is None:
                label = "_unknown"
        self.metrics.count_refusal(protocol, code, name, label)

    async def infer(
        self, request: InferRequest, *, protocol: str, deadline: float | None = None
    ) -> tuple[InferCall, Classification]:
        """An Open Inference Protocol request from either wire: validate, classify."""
        try:
            call = parse(request, self.settings.max_tensor_elements)
        except VisorError as err:
            self.record_failure(request.model, request.version, protocol, err)
            raise
        run = self._classify_images if call.images is not None else self._classify_array
        data = call.images if call.images is not None else call.pixels
        result = await run(call.model, call.version, data, call.options, protocol, deadline)
        return call, result

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
        number = self._version_counted(name, version, protocol)
        return await self._classify_images(name, number, images, options, protocol, deadline)

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
        number = self._version_counted(name, version, protocol)
        return await self._classify_array(name, number, pixels, options, protocol, deadline)

    async def _classify_images(
        self,
        name: str,
        version: int | None,
        images: Sequence[bytes],
        options: InferOptions,
        protocol: str,
        deadline: float | None,
    ) -> Classification:
        lv, shadow = self._lookup_counted(name, version, protocol)
        try:
            check_batch_size(len(images), self.settings.max_images_per_request)
            # Admission before decoding: a full queue (or a request larger than it) is refused
            # at once, not after its images waited for and took the decode threads.
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
            if lv.batcher.closed and version is None:
                lv = self._rerouted(lv)
                shadow = None if shadow is None or shadow.batcher.closed else shadow
            return await self._classify(
                lv, pixels, options, protocol, deadline, reservation, shadow
            )
        finally:
            reservation.release()  # a no-op once the batcher queued the images

    async def _classify_array(
        self,
        name: str,
        version: int | None,
        pixels: np.ndarray,
        options: InferOptions,
        protocol: str,
        deadline: float | None,
    ) -> Classification:
        lv, shadow = self._lookup_counted(name, version, protocol)
        return await self._classify(lv, pixels, options, protocol, deadline, shadow=shadow)

    def _version_counted(self, name: str, version: int | str | None, protocol: str) -> int | None:
        try:
            return params.version(version)
        except VisorError as err:
            self.record_failure(name, version, protocol, err)
            raise

    def _lookup_counted(
        self, name: str, version: int | None, protocol: str
    ) -> tuple[LoadedVersion, LoadedVersion | None]:
        try:
            return self._lookup(name, version)
        except VisorError as err:
            self.record_failure(name, version, protocol, err)
            raise

    def _rerouted(self, lv: LoadedVersion) -> LoadedVersion:
        """Who takes a request whose version was swapped out while its images were decoded. It
        was routed and counted already, so this routes without counting (a second count would
        skew a canary's share and the rollout's answered totals): the version's reload when it
        has one, else the model's current version, when it expects the same input (otherwise
        the closed batcher says UNAVAILABLE: retry)."""
        repo = self.repository
        serving = repo.serving.get(lv.name, {})
        newer = serving.get(lv.version)
        if newer is None:
            newer, _ = self.rollouts.route(lv.name, serving, repo.latest.get(lv.name), count=False)
        return newer if newer is not None and newer.meta.input == lv.meta.input else lv

    def _lookup(self, name: str, version: int | None) -> tuple[LoadedVersion, LoadedVersion | None]:
        """The version that answers, and a candidate that shadows it (None mostly): a request
        that names no version goes where the model's rollout sends it."""
        if self._stopping:
            raise ModelUnavailable("the server is shutting down; retry on another replica")
        if not self._started:
            raise ModelUnavailable("the server is starting: models are still loading; retry")
        shadow = None
        if version is None:
            repo = self.repository
            lv, shadow = self.rollouts.route(
                name, repo.serving.get(name, {}), repo.latest.get(name)
            )
        else:
            lv = self.repository.serving.get(name, {}).get(version)
        if lv is not None:
            return lv, shadow
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
        shadow: LoadedVersion | None = None,
    ) -> Classification:
        try:
            pixels = check_pixels(pixels, lv.meta.input, self.settings.max_images_per_request)
            k = lv.post.top_k(options)
            thresholds, source, certified = lv.post.decision(options)
            truth = (
                lv.post.ground_truth(options.ground_truth, len(pixels))
                if options.ground_truth is not None
                else None
            )
            output = await lv.batcher.submit(pixels, deadline, reservation)
            result = self._result(lv, output, k, (thresholds, source, certified), truth)
        except VisorError as exc:
            lv.metrics.count_request(protocol, exc.grpc_code.name)
            raise
        except Exception as exc:
            log.exception("bug while classifying with %s v%d", lv.name, lv.version)
            lv.metrics.count_request(protocol, "INTERNAL")
            raise InternalError(f"internal error: {type(exc).__name__}") from exc
        lv.metrics.count_request(protocol, "OK")
        if shadow is not None:
            self._shadows.add(lv, shadow, pixels, result)
        return result

    def _result(
        self,
        lv: LoadedVersion,
        output: np.ndarray,
        k: int,
        decision: tuple[np.ndarray, str, np.ndarray | None],
        truth: np.ndarray | None,
    ) -> Classification:
        probs = lv.post.probabilities(output)
        thresholds, source, certified = decision
        result = Classification(
            model=lv.name,
            version=lv.version,
            labels=lv.post.labels,
            probabilities=probs,
            k=k,
            thresholds=thresholds,
            threshold_source=source,
            certified=certified,
            device=lv.backend.device,
            metrics=batch_metrics(probs, thresholds, truth, lv.post.labels)
            if truth is not None
            else None,
        )
        lv.metrics.count_predicted(result.hits)
        lv.metrics.images.inc(len(probs))
        result.request_id = (
            lv.monitor.record(result, lv.post.calibrated)
            if lv.monitor is not None
            else uuid.uuid4().hex
        )
        return result

    # --- feedback --------------------------------------------------------------------------
    async def feedback(
        self, request_id: str, labels: Sequence[str | int | None], index: int | None = None
    ) -> FeedbackResult:
        """Ground truth for an answered request (its ``request_id``): feeds the live metrics.

        The id is a signed receipt of the answer, so this process takes it whichever replica or
        worker answered, before or after a restart.
        """
        try:
            if not self.settings.monitoring:
                raise UnknownRequest(
                    "Live verification is off (VISOR_MONITORING=false): no feedback is taken."
                )
            receipt = self.receipts.read(request_id)
            lv = self.repository.serving.get(receipt.model, {}).get(receipt.version)
            if lv is None or lv.monitor is None:
                raise UnknownRequest(
                    f"{receipt.model} v{receipt.version} answered this request but is not "
                    "served here any more: its feedback can no longer be counted."
                )
        except UnknownRequest:
            self.metrics.live_feedback_unmatched.inc()
            raise
        done = lv.monitor.feedback(receipt, labels, index)
        self.rollouts.feedback(receipt, request_id, done.truths)
        return done

    def live_view(self, name: str, version: int | str) -> dict[str, Any]:
        """This process's live view of a served version: feedback window, bounds, drift."""
        info = self.model_info(name, version)
        lv = self.repository.serving.get(info.name, {}).get(info.version)
        if lv is None or lv.monitor is None:
            why = (
                "live verification is off (VISOR_MONITORING=false)"
                if not self.settings.monitoring
                else f"it is {info.status.value}"
            )
            raise ModelUnavailable(f"{info.name} v{info.version} has no live view: {why}.")
        view = lv.monitor.snapshot()
        return {"name": info.name, "version": info.version, "pid": os.getpid(), **view}


@functools.cache
def _visor_version() -> str:
    try:
        return package_version("visor")
    except PackageNotFoundError:
        return "0"
