"""API keys on gRPC: inference and model calls need one; server health (OIP ServerLive/ServerReady
and grpc.health.v1 Check/Watch) stays open, as HTTP's /v2/health/* do."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.auth import ApiKeyInterceptor, ApiKeys
from service.engine import Engine
from service.grpc.frontend import GrpcFrontend
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.helpers.servers import LoopThread


@pytest.fixture
def keyed_channel(make_settings, registry):
    settings = make_settings(api_keys=["secret"])
    thread = LoopThread()
    engine = Engine(settings, registry=registry)
    thread.run(engine.start())
    interceptor = ApiKeyInterceptor(ApiKeys(settings.api_keys))
    server = GrpcFrontend(engine, settings, interceptors=[interceptor])
    thread.run(server.start())
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield channel
    channel.close()
    thread.run(server.stop(0))
    thread.run(engine.stop())
    thread.close()


def test_server_health_is_open_without_a_key(keyed_channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(keyed_channel)
    assert stub.ServerLive(pb.ServerLiveRequest()).live is True
    assert stub.ServerReady(pb.ServerReadyRequest()).ready is True
    health = health_pb2_grpc.HealthStub(keyed_channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest()).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    watch = health.Watch(health_pb2.HealthCheckRequest(service="tiny"))
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("ModelReady", pb.ModelReadyRequest(name="tiny")),
        ("ModelMetadata", pb.ModelMetadataRequest(name="tiny")),
        ("ServerMetadata", pb.ServerMetadataRequest()),
        ("ModelInfer", pb.ModelInferRequest(model_name="tiny")),
    ],
)
def test_model_calls_still_need_the_key(keyed_channel, method: str, request_) -> None:
    call = getattr(pb_grpc.GRPCInferenceServiceStub(keyed_channel), method)
    with pytest.raises(grpc.RpcError) as err:
        call(request_)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    if method != "ModelInfer":  # an empty ModelInfer gets past the key, then fails validation
        call(request_, metadata=[("x-api-key", "secret")])
