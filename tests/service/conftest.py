"""Fixtures of the service tests; the helpers live in ``svc_helpers`` (a unique module name, so
``import`` never confuses them with ``tests/conftest.py``)."""

from s3_helpers import s3_server  # noqa: F401 - the loopback S3 server (test_storage.py)
from svc_helpers import (  # noqa: F401 - pytest finds fixtures by name in this module
    anyio_backend,
    grpc_server,
    make_settings,
    model_repo,
    registry,
    stub,
)
