#!/usr/bin/env python3
"""The image's HEALTHCHECK: ``GET /readyz`` (or the path given) on this container's HTTP port.

Exit 0 on a 200, 1 otherwise. Standard library only, so a check costs a Python start, not an
import of Visor. It follows the server's settings: ``VISOR_HTTP_PORT``; HTTPS when
``VISOR_TLS_CERT_FILE`` is set; under mutual TLS (``VISOR_TLS_CLIENT_CA_FILE``) it presents the
client certificate ``VISOR_HEALTHCHECK_CERT_FILE`` / ``VISOR_HEALTHCHECK_KEY_FILE``.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request


def main(argv: list[str]) -> int:
    env = os.environ
    path = argv[1] if len(argv) > 1 else "/readyz"
    context = None
    scheme = "http"
    if env.get("VISOR_TLS_CERT_FILE"):
        scheme = "https"
        # Our own server over loopback: its certificate names the service, not 127.0.0.1, and
        # checking it here would prove nothing.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if env.get("VISOR_TLS_CLIENT_CA_FILE"):
            cert, key = (
                env.get("VISOR_HEALTHCHECK_CERT_FILE"),
                env.get("VISOR_HEALTHCHECK_KEY_FILE"),
            )
            if not (cert and key):
                print(
                    "healthcheck: mutual TLS is on: set VISOR_HEALTHCHECK_CERT_FILE and "
                    "VISOR_HEALTHCHECK_KEY_FILE to a client certificate the server accepts",
                    file=sys.stderr,
                )
                return 1
            try:
                context.load_cert_chain(cert, key)
            except OSError as exc:
                print(f"healthcheck: client certificate {cert}: {exc}", file=sys.stderr)
                return 1
    url = f"{scheme}://127.0.0.1:{env.get('VISOR_HTTP_PORT', '3000')}{path}"
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:  # refused, TLS failures, timeouts, and HTTP errors (a 503)
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
