"""``inference.GRPCInferenceService``: each method translates, calls the engine, translates back."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import grpc

from service.engine import Engine
from service.errors import ModelUnavailable, VisorError
from service.grpc import convert
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from service.grpc.handlers import Undecodable
from service.settings import Settings

log = logging.getLogger(__name__)
EXTENSIONS = ["model_stream_infer"]  # besides the engine's, which both wires share


def _ascii(text: str) -> str:
    # GRPC metadata values must be printable ASCII.
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:1024]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._timeout = settings.request_timeout_s
        self.stopping = False  # set by GrpcFrontend.stop: new inference calls get UNAVAILABLE
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
        try:
            ready = self._engine.model_ready(request.name, request.version)
        except VisorError as err:
            await context.abort(err.grpc_code, err.message)
        if not ready and (failure := self._engine.load_failure(request.name, request.version)):
            # The reply is a bare bool; the reason travels as trailing metadata
            context.set_trailing_metadata((("visor-load-error", _ascii(failure)),))
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        meta = self._engine.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"] + EXTENSIONS
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        try:
            meta = self._engine.model_metadata(request.name, request.version)
        except VisorError as err:
            await context.abort(err.grpc_code, err.message)
        resp = pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"]
        )
        for tensor in meta["inputs"]:
            resp.inputs.add(**tensor)
        for tensor in meta["outputs"]:
            resp.outputs.add(**tensor)
        resp.parameters["labels"].string_param = json.dumps(meta["labels"])
        if meta["thresholds"] is not None:
            resp.parameters["thresholds"].string_param = json.dumps(meta["thresholds"])
        if meta["rollout"] is not None:
            resp.parameters["rollout"].string_param = json.dumps(meta["rollout"])
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
        # Requests of one stream run concurrently (so they can share batches); answers come
        # back as they finish, each carrying its request's id, as in Triton.
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        remaining = context.time_remaining()
        # The stream's deadline bounds every request of it; without one, each request
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
                    infer_response=pb.ModelInferResponse()
                    if isinstance(request, Undecodable)
                    else pb.ModelInferResponse(
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
        if isinstance(request, Undecodable):
            self._engine.record_failure(None, None, "grpc", request.error)
            raise request.error
        try:
            oip = convert.to_request(request)
        except VisorError as err:
            self._engine.record_failure(request.model_name, request.model_version, "grpc", err)
            raise
        call, result = await self._engine.infer(oip, protocol="grpc", deadline=deadline)
        return convert.encode_response(request, call, result, into)
