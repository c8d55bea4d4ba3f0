"""One exception hierarchy; each error carries its HTTP status and gRPC code (see api.md)."""

from __future__ import annotations

import grpc


class StartupError(Exception):
    """A configuration that cannot start; ``str()`` is the one line shown to the operator."""


class VisorError(Exception):
    """Base of every error Visor reports to a client. ``str(err)`` is the user-facing sentence."""

    http_status: int = 500
    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(VisorError):
    http_status, grpc_code, reason = 400, grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"


class Unauthenticated(VisorError):
    http_status, grpc_code, reason = 401, grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"


class ModelNotFound(VisorError):
    http_status, grpc_code, reason = 404, grpc.StatusCode.NOT_FOUND, "not_found"


class UnknownRequest(VisorError):
    """Feedback for a request id this server does not hold (never issued, evicted or expired)."""

    http_status, grpc_code, reason = 404, grpc.StatusCode.NOT_FOUND, "unknown_request"


class FeedbackConflict(VisorError):
    """Feedback for an image whose ground truth was already recorded."""

    http_status, grpc_code, reason = 409, grpc.StatusCode.ALREADY_EXISTS, "already_recorded"


class PayloadTooLarge(VisorError):
    http_status, grpc_code, reason = 413, grpc.StatusCode.RESOURCE_EXHAUSTED, "too_large"


class QueueFull(VisorError):
    http_status, grpc_code, reason = 503, grpc.StatusCode.RESOURCE_EXHAUSTED, "queue_full"


class ModelUnavailable(VisorError):
    http_status, grpc_code, reason = 503, grpc.StatusCode.UNAVAILABLE, "unavailable"


class DeadlineExceeded(VisorError):
    http_status, grpc_code, reason = 504, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline_exceeded"


class InternalError(VisorError):
    """A bug in Visor: never raised for a client's mistake."""
