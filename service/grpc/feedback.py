"""``visor.v1.Feedback`` (proto/visor_ext.proto): ground truth for answered requests, over gRPC."""

from __future__ import annotations

import grpc

from service.engine import Engine
from service.errors import VisorError
from service.grpc.generated import visor_ext_pb2 as ext
from service.grpc.generated import visor_ext_pb2_grpc as ext_grpc

SERVICE_NAME = "visor.v1.Feedback"


class FeedbackServicer(ext_grpc.FeedbackServicer):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def SendFeedback(
        self, request: ext.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> ext.FeedbackResponse:
        # Proto3 strings cannot be null: "" stands for an image whose label is unknown.
        labels = [label or None for label in request.labels]
        index = request.index if request.HasField("index") else None
        try:
            done = await self._engine.feedback(request.request_id, labels, index)
        except VisorError as err:
            await context.abort(err.grpc_code, err.message)
        return ext.FeedbackResponse(
            model_name=done.model, model_version=str(done.version), accepted=done.accepted
        )
