"""All serving settings in one place: flags, environment (``VISOR_`` prefix) or a ``.env`` file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.policy import VersionPolicy


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VISOR_", env_file=".env", extra="ignore")

    # --- model repository -------------------------------------------------------------
    models: Path = Field(
        Path("models"),
        description="The model repository to serve: a folder, or a bucket (s3://, gs://, "
        "az://bucket/prefix; docs/deploy.md) whose versions are downloaded into models_cache.",
    )
    models_url: str | None = Field(
        None, description="Set from --models when it names a bucket; models is then the cache."
    )
    models_cache: Path | None = Field(
        None,
        description="Where versions from a bucket are downloaded and checked before they "
        "serve; default: a folder per bucket under the temp directory.",
    )
    backend: Literal["onnx", "savedmodel", "keras_h5"] = Field(
        "onnx", description="Which artifact to load; only onnx avoids importing TensorFlow."
    )
    version_policy: str = Field(
        "latest:1", description="'latest:N' (the N newest), 'all', or 'specific:1,3'."
    )
    poll_interval_s: float = Field(5.0, ge=0, description="Hot-reload poll period; 0 disables.")
    warmup_batch_sizes: list[int] | None = Field(
        None, description="Batch sizes to warm up with; default: 1, 2, 4 ... max_batch_size."
    )
    golden_tolerance: float | None = Field(
        None,
        gt=0,
        description="Max |output - golden output| a version may show at load; default: the "
        "tolerance stored with it (raise it for a provider whose arithmetic differs more).",
    )

    # --- ONNX Runtime -------------------------------------------------------------------
    providers: list[str] = Field(
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        description="Execution providers in order of preference; unavailable ones are skipped.",
    )
    intra_op_threads: int = Field(0, ge=0, description="ORT intra-op threads; 0 = ORT default.")
    inter_op_threads: int = Field(0, ge=0, description="ORT inter-op threads; 0 = ORT default.")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ORT graph optimisation level."
    )
    ort_allow_spinning: bool = Field(
        False,
        description="Let ORT's threads spin between operators: lower latency for a lone request, "
        "but on a busy or shared CPU spinning threads steal time from concurrent batches.",
    )
    ort_spin_lone_requests: bool = Field(
        True,
        description="On the CPU, run a single-image batch that has the cores to itself on a "
        "second, spinning ORT session: spinning's latency for lone requests, none of its cost "
        "under load.",
    )
    inline_lone_requests: bool = Field(
        True,
        description="Run a request that finds its model idle (nothing queued or running, no "
        "load in the last 0.1 s) on the event loop itself: no thread hand-over for a lone "
        "request; under load requests are batched as usual.",
    )
    require_provider: bool = Field(
        False,
        description="Refuse to load a model whose active provider is not the first wanted one.",
    )

    # --- batching -----------------------------------------------------------------------
    max_batch_size: int = Field(32, ge=1, description="Largest batch the batcher forms.")
    cpu_max_batch_size: int = Field(
        8,
        ge=1,
        description="Cap on max_batch_size for a model running on the CPU: past a few images a "
        "CPU gains no throughput, only latency and ONNX Runtime arena memory.",
    )
    max_queue_delay_ms: float = Field(2.0, ge=0, description="Longest wait to fill a batch.")
    max_queue_size: int = Field(
        1024, ge=1, description="Queued images before 503/RESOURCE_EXHAUSTED."
    )
    inference_threads: int = Field(2, ge=1, description="Threads running decode and inference.")
    decode_tasks_per_request: int = Field(
        1,
        ge=1,
        description="Images of one request decoding at once: requests take turns in the decode "
        "threads, so a small request never waits for a large one to finish decoding.",
    )
    max_request_pixels: int = Field(
        100_000_000,
        ge=1,
        description="Pixels (width x height, summed over its images) one request may decode; "
        "more is a 413/RESOURCE_EXHAUSTED before any decoding.",
    )
    gil_switch_interval_ms: float = Field(
        1.0,
        gt=0,
        le=100,
        description="How long a server thread may keep Python's GIL while another waits for it "
        "(Python's default: 5 ms). Shorter: an inference thread back from ONNX Runtime waits "
        "less for the event loop.",
    )

    # --- front-ends -----------------------------------------------------------------------
    protocol: Literal["grpc", "http", "both"] = Field(
        "both", description="Which front-ends `python -m service serve` starts."
    )
    host: str = Field("0.0.0.0", description="Address both servers bind.")
    http_port: int = Field(3000, ge=0, le=65535, description="HTTP (BentoML) port.")
    grpc_port: int = Field(
        50051,
        ge=0,
        le=65535,
        description="gRPC (Open Inference Protocol v2) port; 0 = any free port.",
    )
    workers: int | Literal["auto"] = Field(
        "auto",
        description="Worker processes, each with its own engine, sharing both ports. auto: one "
        "per usable core but one (at most 4; so 1 on 2 cores) when every model is small (ONNX "
        "file up to auto_workers_max_model_mb) and on the CPU, else 1; decided once at start.",
    )
    loop_busy_poll_us: float = Field(
        500.0,
        ge=0,
        le=100_000,
        description="After handling I/O, the event loop polls without sleeping for up to this "
        "many microseconds before it blocks, so a client's next request finds its core awake "
        "(service/busypoll.py); CPU is spent only in that window after traffic. 0: sleep at once.",
    )
    single_process: bool = Field(
        True,
        description="With one worker, serve in the started process without BentoML's "
        "supervisor (about 100 MB less at rest); a crashed worker then ends the server, for the "
        "container runtime to restart. false keeps the supervisor, which restarts it.",
    )
    auto_workers_max_model_mb: float = Field(
        1.0,
        gt=0,
        description="Largest ONNX file (MB) for which --workers auto runs a worker per core: "
        "past it the model, not the protocol, is the bottleneck, and ONNX Runtime already "
        "uses every core.",
    )
    grpc_max_message_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="gRPC message limit, both directions."
    )
    grpc_keepalive_time_s: float = Field(
        60.0, gt=0, description="gRPC server keepalive ping period."
    )
    grpc_keepalive_timeout_s: float = Field(
        20.0, gt=0, description="Close a gRPC connection whose keepalive ping is not acked in time."
    )
    grpc_min_ping_interval_s: float = Field(
        10.0, ge=0, description="Shortest client ping interval the gRPC server accepts."
    )
    grpc_reflection: bool = Field(True, description="Enable gRPC server reflection.")
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="HTTP body limit (413).")
    # --- slow and idle clients (docs/service.md "Timeouts and connection limits") ------------
    idle_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Close a connection with no request in progress for this long (HTTP "
        "keep-alive and never-used connections; gRPC max_connection_idle).",
    )
    http_header_timeout_s: float = Field(
        10.0, gt=0, description="Close an HTTP connection whose request headers take longer."
    )
    http_body_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Close an HTTP connection whose request body takes longer after its headers.",
    )
    http_max_header_bytes: int = Field(
        65536, ge=1024, description="Request line and headers of one HTTP request (431 past it)."
    )
    max_connections: int = Field(
        1000, ge=1, description="Open connections per port and worker; more are closed at once."
    )
    grpc_handshake_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Close a gRPC connection that has not finished its HTTP/2 handshake by then.",
    )
    grpc_max_connection_age_s: float = Field(
        1800.0,
        gt=0,
        description="Ask a gRPC client to reconnect (GOAWAY) after this long; with the grace "
        "below it bounds a stalled or trickled call.",
    )
    grpc_max_connection_age_grace_s: float = Field(
        60.0,
        gt=0,
        description="Time calls in flight get after that GOAWAY before the connection is closed.",
    )
    grpc_max_concurrent_streams: int = Field(
        1024,
        ge=1,
        description="Calls in progress at once on one gRPC connection. gRPC counts a call until "
        "the server has finished with it, which under load lags the client: at 100, a client "
        "with 64 calls in flight on one connection had 1.6% of them refused (REFUSED_STREAM).",
    )
    max_images_per_request: int = Field(
        256, ge=1, description="More images in one request is a 400/INVALID_ARGUMENT."
    )
    max_tensor_elements: int = Field(
        1 << 26,
        ge=1,
        description="Most elements an input tensor's shape may claim (a bigger claim is a 400).",
    )
    request_timeout_s: float = Field(30.0, gt=0, description="Default per-request deadline.")
    grace_period_s: float = Field(20.0, ge=0, description="SIGTERM: time to finish in-flight work.")
    # NoDecode + the validator below: VISOR_API_KEYS takes "k1,k2" as well as JSON.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="When set, every inference call needs one of these keys (comma-separated).",
    )
    require_api_keys: bool = Field(
        False,
        description="Refuse to start unless VISOR_API_KEYS holds a key (deployments fail closed).",
    )
    default_top_k: int = Field(5, ge=1, description="Classes in top-k when a request names none.")
    max_image_pixels: int = Field(
        50_000_000, ge=1, description="Decompression-bomb limit for encoded images."
    )
    gc_freeze: bool = Field(
        True,
        description="Move every object alive once the models are loaded out of the garbage "
        "collector's reach (gc.freeze): full collections stop stalling requests.",
    )
    log_level: str = Field("INFO", description="Python logging level of the server.")
    http_access_log: bool = Field(
        False, description="BentoML's per-request access log (off: it costs time on every request)."
    )
    http_fast_infer: bool = Field(
        True,
        description="REST inference (POST /v2/models/.../infer) skips BentoML's routing and the "
        "middlewares with nothing to do for it (service/http/fastpath.py); off by itself when "
        "tracing, the access log, CORS or a concurrency cap is on.",
    )
    http_tracing: bool = Field(
        False,
        description="BentoML's OpenTelemetry span on every HTTP request. Off by default: with no "
        "exporter configured the spans go nowhere, yet they cost CPU on every request.",
    )

    # --- live verification (service/monitoring) --------------------------------------------
    monitoring: bool = Field(
        True, description="Keep predictions for feedback; export live precision/recall and drift."
    )
    # NoDecode + the validator below: "new,old" as well as JSON, like api_keys.
    feedback_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Keys signing request ids (receipts), shared by every replica so any takes "
        "the feedback; the first signs, later ones are still accepted (rotation). Unset: a "
        "random key per server start.",
    )
    monitor_predictions: int = Field(
        50_000,
        ge=1,
        description="Requests per model version whose feedback is remembered, so a repeat is "
        "refused (409).",
    )
    monitor_prediction_ttl_s: float = Field(
        3600.0, gt=0, description="Feedback for a request older than this is refused (404)."
    )
    live_window: int = Field(
        5000, ge=1, description="Feedback images the live precision/recall are computed over."
    )
    live_window_s: float = Field(
        86400.0, gt=0, description="Feedback older than this leaves the live precision/recall."
    )
    drift_window: int = Field(
        5000, ge=1, description="Served images the drift (PSI) is computed over."
    )
    drift_window_s: float = Field(
        3600.0, gt=0, description="Served images older than this leave the drift window."
    )
    drift_min_samples: int = Field(
        200, ge=1, description="Drift gauges stay NaN until the window holds this many images."
    )
    drift_refresh_every: int = Field(
        100,
        ge=1,
        description="Recompute the drift gauges, and add to the drift counters, every this "
        "many served images.",
    )

    # --- rollouts (service/rollout, docs/service.md "Rollouts") ------------------------------
    rollout_state: str | None = Field(
        None,
        description="Folder (a volume every replica mounts) or bucket URL where every process "
        "pools rollout evidence and reads decisions. Unset: <models>/.rollout (the bucket's "
        "for --models s3://...); 'none': each process decides on its own feedback.",
    )
    rollout_sync_s: float = Field(
        2.0, gt=0, description="How often each process publishes and reads rollout evidence."
    )

    # --- TLS (docs/deploy.md "TLS") ----------------------------------------------------------
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate (chain) of the server; with tls_key_file, HTTPS and gRPC "
        "over TLS on the same ports, and plain connections are refused.",
    )
    tls_key_file: Path | None = Field(
        None,
        validate_default=True,
        description="PEM private key (unencrypted) of tls_cert_file.",
    )
    tls_client_ca_file: Path | None = Field(
        None,
        validate_default=True,
        description="PEM CA certificate(s): mutual TLS, every client must present a "
        "certificate signed by one of them.",
    )

    @property
    def worker_count(self) -> int:
        """Worker processes; ``auto`` is decided at start-up (``service.workers.count``), and
        until then counts as this one process."""
        return self.workers if isinstance(self.workers, int) else 1

    @property
    def rollout_location(self) -> str | None:
        """Where rollout evidence is pooled (``rollout_state``, its default), None for 'none'."""
        if self.rollout_state is not None:
            text = self.rollout_state.strip()
            return None if text.lower() == "none" else text
        if self.models_url:
            return self.models_url.rstrip("/") + "/.rollout"
        return str(self.models / ".rollout")

    @field_validator("workers")
    @classmethod
    def _positive_workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be 1 or more, or auto")
        return value

    @model_validator(mode="before")
    @classmethod
    def _bucket_models(cls, data: Any) -> Any:
        # a URL as a Path would lose its "//": kept in models_url; models becomes the cache
        if isinstance(data, dict) and isinstance(data.get("models"), str):
            from contract.storage import is_url

            if is_url(data["models"]):
                data = {**data, "models_url": data["models"]}
                data.pop("models")
        return data

    @model_validator(mode="after")
    def _bucket_cache(self) -> Settings:
        if self.models_url:
            from contract.storage import default_cache, is_url

            if not is_url(self.models_url):
                raise ValueError(f"models_url {self.models_url!r} is not scheme://bucket/prefix")
            self.models_cache = self.models_cache or default_cache(self.models_url)
            self.models = self.models_cache
        return self

    @field_validator("version_policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        VersionPolicy.parse(value)  # raises ValueError with the accepted forms
        return value

    @field_validator("require_api_keys")
    @classmethod
    def _keys_when_required(cls, value: bool, info: ValidationInfo) -> bool:
        # api_keys is declared first, so it is validated (or failed) before this runs.
        keys = info.data.get("api_keys")
        if value and keys is not None and not any(k.get_secret_value() for k in keys):
            raise ValueError(
                "no API key is set: put one or more keys in VISOR_API_KEYS (the visor-api-keys "
                "Secret in deploy/), or set VISOR_REQUIRE_API_KEYS=false to serve without keys"
            )
        return value

    @field_validator("tls_cert_file", "tls_key_file", "tls_client_ca_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: Any) -> Any:
        # VISOR_TLS_CERT_FILE= (empty, as a template leaves it) means no TLS, not the path "."
        return None if value == "" else value

    @field_validator("tls_key_file")
    @classmethod
    def _key_with_cert(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if (value is None) != (info.data.get("tls_cert_file") is None):
            raise ValueError(
                "tls_cert_file and tls_key_file come together: set both (TLS on both ports) or "
                "neither"
            )
        return value

    @field_validator("tls_client_ca_file")
    @classmethod
    def _client_ca_with_cert(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("tls_cert_file") is None:
            raise ValueError("mutual TLS needs the server's own tls_cert_file and tls_key_file too")
        return value

    @field_validator("api_keys", "feedback_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [k.strip() for k in text.split(",") if k.strip()]
        return value
