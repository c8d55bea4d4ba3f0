"""Registers the OIP servicer with request parsing that cannot escape as UNKNOWN.

grpcio calls a method's request deserializer before any servicer code runs; when protobuf refuses
the bytes (invalid UTF-8 in a string field, a truncated message) the call ends UNKNOWN with no
message. Here each deserializer returns an ``Undecodable`` instead, and the method answers
INVALID_ARGUMENT with protobuf's reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from service.errors import InvalidInput
from service.grpc.generated import grpc_predict_v2_pb2 as pb

SERVICE_NAME = "inference.GRPCInferenceService"
_UNARY = (
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
)


class Undecodable:
    """A request message protobuf could not parse; ``error`` says why, as a client error."""

    __slots__ = ("error",)

    def __init__(self, reason: str) -> None:
        self.error = InvalidInput(f"the request is not a valid protobuf message: {reason}")


def _deserializer(message: type) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as err:
            return Undecodable(str(err) or type(err).__name__)

    return parse


def _unary(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await context.abort(request.error.grpc_code, request.error.message)
        return await behaviour(request, context)

    return call


def add_inference_service(servicer: Any, server: grpc.aio.Server) -> None:
    """What ``add_GRPCInferenceServiceServicer_to_server`` does, with safe deserializers.

    ``ModelStreamInfer`` receives ``Undecodable`` items in its request stream and answers each
    with an error message on the stream, as it does for any other bad request.
    """
    handlers = {}
    for name in _UNARY:
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            _unary(getattr(servicer, name)),
            request_deserializer=_deserializer(getattr(pb, f"{name}Request")),
            response_serializer=getattr(pb, f"{name}Response").SerializeToString,
        )
    # ModelInfer takes an Undecodable itself: it counts the refusal before answering it.
    handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
        servicer.ModelInfer,
        request_deserializer=_deserializer(pb.ModelInferRequest),
        response_serializer=pb.ModelInferResponse.SerializeToString,
    )
    stream: Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], Any] = (
        servicer.ModelStreamInfer
    )
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        stream,
        request_deserializer=_deserializer(pb.ModelInferRequest),
        response_serializer=pb.ModelStreamInferResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
