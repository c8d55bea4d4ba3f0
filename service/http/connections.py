"""The HTTP port's listening socket at SIGTERM (the per-connection guard is in ``bento.py``)."""

from __future__ import annotations

import contextlib
import os
import socket

import psutil


def close_listener(port: int) -> None:
    """Stop the kernel accepting connections on ``port``, for every process sharing its socket.

    BentoML's supervisor and each worker hold the same listening socket; uvicorn closing its
    own descriptor leaves it listening. ``shutdown`` acts on the socket itself: new connections
    are refused, and those waiting unaccepted in its backlog are reset now rather than at exit.
    """
    for conn in psutil.Process().net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.fd >= 0:
            with socket.socket(fileno=os.dup(conn.fd)) as sock, contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
