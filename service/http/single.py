"""The one worker of a server started without BentoML's supervisor (``bento.serve_in_process``
execs ``python -m service.http.single METRICS_DIR WORKER_ARGS...``).

It runs BentoML's own worker script with two differences a supervisor used to make:

- SIGTERM and SIGINT end the process with status 0 once the server has drained. uvicorn
  re-raises the signal after its shutdown, which would otherwise kill the process by the signal
  (status 143, or a KeyboardInterrupt traceback for Ctrl-C) and skip the clean-up below.
- The Prometheus folder the launcher made for this server is removed on the way out.
"""

from __future__ import annotations

import shutil
import signal
import sys
from types import FrameType


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    metrics_dir, *worker_args = sys.argv[1:] if argv is None else argv
    # uvicorn installs its own handlers while it serves and restores these afterwards, then
    # raises the signal it caught once more: that second delivery lands here.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit)
    from _bentoml_impl.worker.service import main as worker

    try:
        worker(worker_args, prog_name="python -m service.http.single")
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
