"""A call that holds a gRPC connection without finishing (a trickled or stalled message, a stream
left open) ends once the connection's age and grace have passed; it never holds it for ever."""

from __future__ import annotations

import threading

import grpc

from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.helpers.servers import GrpcFixture


def test_stalled_call_is_cut_after_age_and_grace(make_settings, registry) -> None:
    fx = GrpcFixture(
        make_settings(grpc_max_connection_age_s=1.0, grpc_max_connection_age_grace_s=1.0),
        registry,
    )
    release = threading.Event()

    def stalled():  # a client that opened its stream and never sends a request
        release.wait(60)
        yield from ()

    try:
        with grpc.insecure_channel(fx.url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            call = stub.ModelStreamInfer(stalled(), timeout=30)  # generous bound
            try:
                next(call)
                code = None
            except grpc.RpcError as err:
                code = err.code()
            # DEADLINE_EXCEEDED would mean the server kept the connection until our own bound
            assert code is grpc.StatusCode.UNAVAILABLE
    finally:
        release.set()
        fx.stop(0)
