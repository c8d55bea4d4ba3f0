"""Optional API keys, checked the same way on HTTP and gRPC.

A key travels as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (HTTP headers or gRPC
metadata). Health, metrics and reflection stay open so probes and scrapers need no secret.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from pydantic import SecretStr

from service.errors import Unauthenticated
from service.metrics import Metrics

# GRPC methods a probe or tool calls without a key (health checks, reflection), and the
# OIP server health calls, open like HTTP's /v2/health/live and /v2/health/ready.
OPEN_GRPC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
OPEN_GRPC_METHODS = frozenset(
    {
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
    }
)


class ApiKeys:
    """The configured keys; ``check`` compares in constant time against every one."""

    def __init__(self, keys: Iterable[SecretStr | str]) -> None:
        raw = (k.get_secret_value() if isinstance(k, SecretStr) else k for k in keys)
        self._keys = [k.encode() for k in raw if k]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, presented: str | None) -> None:
        """Raise ``Unauthenticated`` unless keys are off or ``presented`` is one of them."""
        if not self._keys:
            return
        if not presented:
            raise Unauthenticated(
                "This server needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key'."
            )
        candidate = presented.encode()
        # Compare against every key without an early exit, so timing tells nothing
        # about which key (or how much of one) matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise Unauthenticated("The API key is not valid for this server.")


def key_from_headers(pairs: Iterable[tuple[str, str]]) -> str | None:
    """The key in ``authorization: Bearer ...`` or ``x-api-key``; header names in lower case."""
    for name, value in pairs:
        if name == "x-api-key":
            return value.strip()
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return None


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every gRPC call without a valid key with UNAUTHENTICATED (health stays open)."""

    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method or ""
        if (
            not self._keys.enabled
            or method in OPEN_GRPC_METHODS
            or method.startswith(OPEN_GRPC_PREFIXES)
        ):
            return await continuation(handler_call_details)
        metadata: Sequence[tuple[str, Any]] = handler_call_details.invocation_metadata or ()
        pairs = ((k.lower(), v) for k, v in metadata if isinstance(v, str))
        try:
            self._keys.check(key_from_headers(pairs))
        except Unauthenticated as err:
            if method.endswith(("/ModelInfer", "/ModelStreamInfer")):
                Metrics.shared().count_refusal("grpc", err.grpc_code.name)
            return _refusal(await continuation(handler_call_details), err.message)
        return await continuation(handler_call_details)


def _refusal(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming shape as ``handler`` that aborts with UNAUTHENTICATED."""

    async def abort_unary(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def abort_stream(_requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    deserializer = handler.request_deserializer if handler else None
    serializer = handler.response_serializer if handler else None
    if handler is not None and handler.request_streaming:
        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(abort_stream, deserializer, serializer)
        return grpc.stream_unary_rpc_method_handler(abort_stream, deserializer, serializer)
    if handler is not None and handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort_unary, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(abort_unary, deserializer, serializer)
