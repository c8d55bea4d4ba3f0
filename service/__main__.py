"""``python -m service serve --models models/ --grpc-port 50051 ...``.

Every option is also a ``VISOR_`` environment variable (see ``service.settings.Settings``);
a flag given on the command line wins.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from collections.abc import Sequence
from types import ModuleType

from pydantic import SecretStr, ValidationError

from service.errors import StartupError
from service.scoring.cli import add_score_parser
from service.settings import Settings
from service.startup import check_models, check_ports, check_tls, describe
from service.workers.count import resolve_workers

log = logging.getLogger("service")

# flag → Settings field; the help text is the field's description.
OPTIONS: dict[str, str] = {
    "--models": "models",
    "--models-cache": "models_cache",
    "--protocol": "protocol",
    "--host": "host",
    "--http-port": "http_port",
    "--grpc-port": "grpc_port",
    "--workers": "workers",
    "--backend": "backend",
    "--version-policy": "version_policy",
    "--poll-interval": "poll_interval_s",
    "--max-batch-size": "max_batch_size",
    "--max-queue-delay-ms": "max_queue_delay_ms",
    "--max-queue-size": "max_queue_size",
    "--inference-threads": "inference_threads",
    "--intra-op-threads": "intra_op_threads",
    "--providers": "providers",
    "--grpc-max-message-bytes": "grpc_max_message_bytes",
    "--request-timeout": "request_timeout_s",
    "--grace-period": "grace_period_s",
    "--log-level": "log_level",
}
LIST_FIELDS = {"providers"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description="Visor model server.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve every model of the repository",
        description="Serve every model in the repository over gRPC (Open Inference Protocol v2) "
        "and HTTP (BentoML). Each option is also an environment variable VISOR_<FIELD>.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fields = Settings.model_fields
    for flag, name in OPTIONS.items():
        info = fields[name]
        help_text = f"{info.description or name} [env VISOR_{name.upper()}]"
        kwargs: dict = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if name in LIST_FIELDS:
            kwargs["nargs"] = "+"
        if name == "protocol":
            kwargs["choices"] = ["grpc", "http", "both"]
        serve.add_argument(flag, **kwargs)
    serve.add_argument(
        "--grpc-only",
        dest="protocol",
        action="store_const",
        const="grpc",
        default=argparse.SUPPRESS,
        help="same as --protocol grpc",
    )
    add_score_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parsed = build_parser().parse_args(argv)
    if parsed.command == "score":
        from service.scoring.cli import run_score

        return run_score(parsed)
    args = vars(parsed)
    args.pop("command")
    try:
        settings = Settings(**args)  # flags override; unset ones come from VISOR_* / defaults
        check_models(settings)
        check_ports(settings)
        check_tls(settings)
    except (ValidationError, StartupError) as exc:
        flags = {name: flag for flag, name in OPTIONS.items()}
        message = describe(exc, flags) if isinstance(exc, ValidationError) else str(exc)
        print(f"python -m service serve: error: {message}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    try:
        serve(settings)
    except StartupError as exc:  # before anything started: the HTTP glue's versions
        print(f"python -m service serve: error: {exc}", file=sys.stderr)
        return 2
    return 0


def serve(settings: Settings) -> None:
    """Serve until SIGTERM: BentoML (HTTP, and gRPC in each worker), or gRPC-only workers."""
    bento = http_launcher(settings)
    auto = settings.workers == "auto"
    settings = resolve_workers(settings)
    log.info("%d worker process(es)%s", settings.worker_count, " (auto)" if auto else "")
    if settings.monitoring and not settings.feedback_keys:
        # One key for every worker of this server, so any of them reads the others' receipts.
        key = SecretStr(secrets.token_urlsafe(32))
        settings = settings.model_copy(update={"feedback_keys": [key]})
        log.warning(
            "VISOR_FEEDBACK_KEYS is not set: request ids are signed with a key of this start "
            "only, so feedback for answers given before a restart, or by another replica, is "
            "refused. Set the same key on every replica (docs/monitoring.md)."
        )
    if bento is not None:
        bento.export_settings(settings)  # before the service's import reads them
        from service.http.frontend import Visor

        bento.serve(settings, Visor)
        return
    from service.server import serve_grpc

    serve_grpc(settings)


def http_launcher(settings: Settings) -> ModuleType | None:
    """``service.http.bento`` (importing it checks BentoML's and uvicorn's versions), or None."""
    if settings.protocol == "grpc":
        return None
    try:
        from service.http import bento
    except ModuleNotFoundError as exc:
        if exc.name != "bentoml":  # only a missing BentoML means "no HTTP front-end here"
            raise
        log.warning("HTTP front-end unavailable (%s): serving gRPC only", exc)
        return None
    return bento


if __name__ == "__main__":
    sys.exit(main())
