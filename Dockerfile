# syntax=docker/dockerfile:1.7
# Visor serving image: HTTP (BentoML) on 3000 and gRPC (Open Inference Protocol) on 50051.
#
#   CPU (default):   docker build -t visor .
#   GPU:             docker build -t visor:gpu \
#                      --build-arg BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 .
#   Baked model:     docker build --target baked -t visor:digits .   (trains the default model)
#   Run:             docker run --stop-timeout 30 -p 3000:3000 -p 50051:50051 \
#                      -v "$PWD/models:/models:ro" visor
#   Stop:            docker stop -t 30 ID   (SIGTERM; Visor finishes in-flight work within its
#                      20 s grace period, VISOR_GRACE_PERIOD_S; Docker's default 10 s is too short)
#
# Install and start use the same scripts as `make serve` (scripts/install.sh, scripts/serve.sh),
# and the serving image installs the `serve` profile only: no TensorFlow.

# Pinned by digest, so every build starts from the same bytes (a tag moves); refresh both with
# `scripts/refresh-base-digest.sh` (asks the registry for the tag's current digest). Another base,
# e.g. a local mirror: --build-arg BASE_IMAGE=... --build-arg TRAIN_IMAGE=...
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
ARG TRAIN_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# --- runtime base: a Python 3 with venv (the CUDA images have none) ---------------------------
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if ! python3 -m venv --help >/dev/null 2>&1; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /opt/visor

# --- dependencies: `scripts/install.sh serve` (the hashed lock) into /opt/visor/.venv ----------
FROM base AS deps
COPY pyproject.toml README.md ./
COPY requirements/ requirements/
# only the two scripts the dependency layer runs, so editing any other leaves it cached
COPY scripts/install.sh scripts/slim-venv.sh scripts/
# ACCEL picks ONNX Runtime's wheel: auto (default) installs onnxruntime-gpu on a CUDA base image
# (they set CUDA_VERSION) and the CPU wheel onnxruntime otherwise; cpu or gpu to choose. Each
# comes from its own lock (requirements/serve-cpu.txt, serve-gpu.txt): never both.
ARG ACCEL=auto
# NOTE: empty packages first, so the dependency layer is cached until the lock changes; the
# editable install maps `contract` and `service` to /opt/visor, where the code lands next. The
# serving image has no `training/`: service/ imports nothing from it (tests/test_architecture.py).
RUN set -eu; accel=$ACCEL; \
    if [ "$accel" = auto ]; then accel=cpu; [ -z "${CUDA_VERSION:-}" ] || accel=gpu; fi; \
    mkdir -p contract service && touch contract/__init__.py service/__init__.py; \
    PYTHON=python3 VENV=.venv VISOR_ACCEL=$accel scripts/install.sh serve; \
    scripts/slim-venv.sh .venv; \
    .venv/bin/python -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())'
COPY scripts/ scripts/
COPY contract/ contract/
COPY service/ service/
# what serving imports must have survived slim-venv.sh
RUN .venv/bin/python scripts/serve-imports.py && .venv/bin/python -m service serve --help >/dev/null

# --- the serving image (models mounted at /models) -----------------------------------------------
FROM base AS runtime
# NOTE: the GPU build passes --build-arg REQUIRE_PROVIDER=true so a model that cannot reach the
# first wanted provider (CUDA) fails to load instead of silently serving on the CPU.
ARG REQUIRE_PROVIDER=false
ARG PROVIDERS='["TensorrtExecutionProvider","CUDAExecutionProvider","CPUExecutionProvider"]'
ENV VISOR_REQUIRE_PROVIDER=${REQUIRE_PROVIDER} VISOR_PROVIDERS=${PROVIDERS}
RUN (getent group visor || groupadd --gid 10001 visor) \
    && useradd --uid 10001 --gid visor --create-home --shell /usr/sbin/nologin visor \
    && mkdir -p /models && chown visor:visor /models
COPY --from=deps --chown=visor:visor /opt/visor /opt/visor
ENV PATH=/opt/visor/.venv/bin:$PATH \
    VENV=/opt/visor/.venv \
    BENTOML_HOME=/tmp/bentoml \
    BENTOML_DO_NOT_TRACK=true \
    VISOR_MODELS=/models \
    VISOR_HOST=0.0.0.0 \
    VISOR_HTTP_PORT=3000 \
    VISOR_GRPC_PORT=50051
USER visor
EXPOSE 3000 50051
# /readyz answers 200 only once every model is loaded and warm; the script follows the
# server's VISOR_HTTP_PORT and its TLS settings (https, a client certificate under mutual TLS).
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "scripts/healthcheck.py", "/readyz"]
# NOTE: SIGTERM starts the graceful stop (grace_period_s, 20 s by default). An image cannot set
# the stop timeout: run with `--stop-timeout 30` / `docker stop -t 30`, and in Kubernetes keep
# terminationGracePeriodSeconds above the grace period (deploy/k8s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["scripts/serve.sh"]
CMD ["--models", "/models"]

# --- optional: train the default model at build time (TensorFlow only in this stage) -------------
FROM ${TRAIN_IMAGE} AS trainer
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /opt/visor
COPY pyproject.toml README.md ./
COPY requirements/ requirements/
COPY scripts/ scripts/
COPY contract/ contract/
COPY service/ service/
COPY training/ training/
RUN PYTHON=python3 VENV=.venv VISOR_ACCEL=cpu scripts/install.sh train \
    && VENV=.venv scripts/default-model.sh /models

FROM runtime AS baked
COPY --from=trainer --chown=visor:visor /models /models

# --- default target: the serving image without a baked model --------------------------------------
FROM runtime AS serve
