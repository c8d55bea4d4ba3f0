# The README's commands. Every target installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
MODELS ?= models
# ONNX Runtime's wheel: auto (onnxruntime-gpu when `nvidia-smi` lists a GPU, else onnxruntime), cpu, gpu
ACCEL  ?= auto
PY      = $(VENV)/bin/python
INSTALL = VENV=$(VENV) PYTHON=$(PYTHON) VISOR_ACCEL=$(ACCEL) scripts/install.sh

.PHONY: serve test install lock lint loadtest bench peers image image-smoke kube-smoke clean help
help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

serve:  ## install serving + training (no test tools), create the default digits model if models/ has none, serve HTTP :3000 + gRPC :50051
	$(INSTALL) train
	VENV=$(VENV) scripts/default-model.sh $(MODELS)
	VENV=$(VENV) scripts/serve.sh --models $(MODELS)

test:  ## install the dev profile (with Debian's browser, Java, promtool) and run the whole test suite
	$(INSTALL) dev
	$(PY) -m pytest $(PYTEST_ARGS)

install:  ## create .venv with the dev profile (PROFILE=serve|train|score|dev)
	$(INSTALL) $(or $(PROFILE),dev)

lock:  ## regenerate the hashed locks requirements/*.txt from pyproject.toml (uv; docs/install.md)
	PYTHON=$(PYTHON) scripts/lock.sh

lint:  ## ruff
	$(VENV)/bin/ruff check service training tests loadtests

# Load test: a bounded headless locust run against a server it starts on loopback.
USERS      ?= 16
SPAWN_RATE ?= 8
RUN_TIME   ?= 30s
MIX        ?= classify=3,v2_infer=1,grpc_raw=3,grpc_bytes=1
LT_MODEL   ?= digits
loadtest:  ## locust, headless and bounded (USERS, SPAWN_RATE, RUN_TIME, MIX): CSV + HTML in loadtests/results/
	$(INSTALL) dev
	VENV=$(VENV) scripts/default-model.sh $(MODELS)
	$(PY) -m loadtests.loadtest --models $(MODELS) --model $(LT_MODEL) --users $(USERS) \
		--spawn-rate $(SPAWN_RATE) --run-time $(RUN_TIME) --mix $(MIX)

# Benchmark: raw ONNX Runtime limit vs Visor (gRPC, REST, HTTP) vs its peers; never part of `make test`.
BENCH_MODEL ?= mobilenetv2
BENCH_ARGS  ?=
bench:  ## benchmark BENCH_MODEL (mobilenetv2|digits) with the peers `make peers` installed; writes docs/benchmarks.{md,json,png}
	$(INSTALL) dev
	$(PY) -m loadtests.bench --model $(BENCH_MODEL) $(BENCH_ARGS)

peers:  ## the benchmark's peer servers (KServe, PyTriton), each in its own venv under build/peers/
	scripts/peer-venvs.sh

# Container image (podman or docker; ENGINE=docker). Tagged with the version the k8s manifests pin.
ENGINE    ?= podman
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# BASE_IMAGE: another base than the Dockerfile's digest-pinned one (a mirror, an offline stand-in)
BASE_IMAGE ?=
image:  ## build the CPU serving image visor:IMAGE_TAG (and visor:latest)
	$(ENGINE) build $(if $(filter podman,$(ENGINE)),--format docker) --network host \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg TRAIN_IMAGE=$(BASE_IMAGE)) \
		-t visor:$(IMAGE_TAG) -t visor:latest .

image-smoke:  ## build the image and try it read-only with the digits model (minutes; not in `make test`)
	$(INSTALL) train
	ENGINE=$(ENGINE) IMAGE=visor:$(IMAGE_TAG) VENV=$(VENV) BASE_IMAGE=$(BASE_IMAGE) scripts/image-smoke.sh

# dev: scripts/kube-smoke-check.py drives both wires with tritonclient (a test tool)
kube-smoke:  ## play deploy/k8s with podman kube play: probes, both wires, read-only, a publish under load (minutes; not in `make test`)
	$(INSTALL) dev
	VENV=$(VENV) BASE_IMAGE=$(BASE_IMAGE) scripts/kube-smoke.sh

clean:  ## remove the virtual environment and caches (models/ is kept)
	rm -rf $(VENV) .pytest_cache build *.egg-info
