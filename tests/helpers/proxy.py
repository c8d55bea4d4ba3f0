"""A reverse proxy on loopback that serves a Visor server under a path prefix, as an ingress
with a rewrite rule does (``/visor/models`` → ``/models``), and counts the requests it passed."""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host"}  # fmt: skip


class PrefixProxy:
    """``http://127.0.0.1:<port><prefix>/...`` → ``<upstream>/...``; anything else is a 404."""

    def __init__(self, upstream: str, prefix: str = "/visor") -> None:
        self.prefix = prefix.rstrip("/")
        self.upstream = urlsplit(upstream)
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, upstream path)
        self.outside: list[str] = []  # paths asked for outside the prefix
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The prefixed base URL of the page, with its trailing slash."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.prefix}/"

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return self.requests[(method, path)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                if not (self.path == proxy.prefix or self.path.startswith(proxy.prefix + "/")):
                    with proxy._lock:
                        proxy.outside.append(self.path)
                    self._answer(404, b"outside the prefix")
                    return
                path = self.path[len(proxy.prefix) :] or "/"
                with proxy._lock:
                    proxy.requests[(self.command, path.split("?")[0])] += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=120
                )
                try:
                    try:
                        conn.request(self.command, path, body=body, headers=headers)
                        reply = conn.getresponse()
                        data = reply.read()
                    except OSError:  # the server stopped (the page still polls): 502
                        self._answer(502, b"upstream unreachable")
                        return
                    self.send_response(reply.status, reply.reason)
                    for key, value in reply.getheaders():
                        if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

            def _answer(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        return Handler
