"""``inference.GRPCInferenceService``: each method translates, calls the engine, translates back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import grpc

from service.engine import Engine
from service.errors import ModelUnavailable, VisorError
from service.grpc import convert
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from service.settings import Settings

log = logging.getLogger(__name__)
EXTENSIONS = ["classification", "model_stream_infer"]


def _server_version() -> str:
    try:
        return package_version("visor")
    except PackageNotFoundError:
        return "0"


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._timeout = settings.request_timeout_s
        self._version = _server_version()
        self.stopping = False  # set by stop_grpc_server: new inference calls get UNAVAILABLE
        self._active = 0  # inference calls in progress
        self._idle: asyncio.Event | None = None

    async def wait_idle(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until no inference call is in progress."""
        if self._active:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                log.warning(
                    "%d gRPC inference calls still running after the grace period", self._active
                )

    def _deadline(self, remaining: float | None) -> float:
        """An absolute ``time.monotonic()`` deadline: the client's, or the default timeout."""
        return time.monotonic() + (remaining if remaining is not None else self._timeout)

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._engine.live)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._engine.ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(
            ready=self._engine.model_ready(request.name, request.version or None)
        )

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="visor", version=self._version, extensions=EXTENSIONS)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        try:
            info = self._engine.model_info(request.name, request.version or None)
        except VisorError as err:
            await context.abort(err.grpc_code, err.message)
        versions = sorted({m.version for m in self._engine.models() if m.name == info.name})
        resp = pb.ModelMetadataResponse(
            name=info.name,
            versions=[str(v) for v in versions],
            platform=f"visor_{info.backend or 'onnx'}",
        )
        if info.metadata is not None:
            spec = info.metadata.input
            resp.inputs.add(
                name=spec.name, datatype="FP32", shape=[-1, spec.height, spec.width, spec.channels]
            )
            resp.outputs.add(
                name="probabilities", datatype="FP32", shape=[-1, len(info.metadata.labels)]
            )
            resp.outputs.add(name="labels", datatype="BYTES", shape=[-1])
            resp.parameters["thresholds"].string_param = info.metadata.thresholds.model_dump_json(
                exclude={"curves"}
            )
        return resp

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        try:
            return await self._infer(request, self._deadline(context.time_remaining()))
        except VisorError as err:
            await context.abort(err.grpc_code, err.message)
        except Exception:
            log.exception("ModelInfer failed")
            await context.abort(
                grpc.StatusCode.INTERNAL, "internal error (a bug in Visor); see the server log"
            )

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        # NOTE: requests of one stream run concurrently (so they can share batches); answers come
        # back as they finish, each carrying its request's id, as in Triton.
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        remaining = context.time_remaining()
        # NOTE: the stream's deadline bounds every request of it; without one, each request
        # gets the default timeout from when it arrives.
        stream_deadline = None if remaining is None else time.monotonic() + remaining
        reader = asyncio.create_task(self._read_stream(request_iterator, answers, stream_deadline))
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        finally:
            reader.cancel()

    async def _read_stream(
        self,
        requests: AsyncIterator[pb.ModelInferRequest],
        answers: asyncio.Queue,
        stream_deadline: float | None,
    ) -> None:
        tasks: set[asyncio.Task] = set()
        try:
            async for request in requests:
                deadline = stream_deadline or self._deadline(None)
                task = asyncio.create_task(self._stream_one(request, answers, deadline))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            answers.put_nowait(None)

    async def _stream_one(
        self, request: pb.ModelInferRequest, answers: asyncio.Queue, deadline: float
    ) -> None:
        answer = pb.ModelStreamInferResponse()
        try:
            await self._infer(request, deadline, answer.infer_response)
            answers.put_nowait(answer)
        except Exception as err:
            if not isinstance(err, VisorError):
                log.exception("ModelStreamInfer request failed")
            message = (
                err.message if isinstance(err, VisorError) else "internal error (a bug in Visor)"
            )
            code = err.grpc_code.name if isinstance(err, VisorError) else "INTERNAL"
            answers.put_nowait(
                pb.ModelStreamInferResponse(
                    error_message=f"{code}: {message}",
                    infer_response=pb.ModelInferResponse(
                        model_name=request.model_name,
                        model_version=request.model_version,
                        id=request.id,
                    ),
                )
            )

    async def _infer(
        self,
        request: pb.ModelInferRequest,
        deadline: float,
        into: pb.ModelInferResponse | None = None,
    ) -> pb.ModelInferResponse:
        if self.stopping:
            raise ModelUnavailable("the server is shutting down; retry on another replica")
        self._active += 1
        try:
            return await self._infer_call(request, deadline, into)
        finally:
            self._active -= 1
            if self._idle is not None and not self._active:
                self._idle.set()

    async def _infer_call(
        self, request: pb.ModelInferRequest, deadline: float, into: pb.ModelInferResponse | None
    ) -> pb.ModelInferResponse:
        name, version = request.model_name, request.model_version or None
        try:
            call = convert.decode_request(request)
        except VisorError as err:
            self._engine.record_failure(name, version, "grpc", err)
            raise
        if call.images is not None:
            result = await self._engine.classify_images(
                name, version, call.images, call.options, protocol="grpc", deadline=deadline
            )
        else:
            result = await self._engine.classify_array(
                name, version, call.pixels, call.options, protocol="grpc", deadline=deadline
            )
        return convert.encode_response(request, call, result, into)
