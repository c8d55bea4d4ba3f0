# The README's commands. Every target installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
MODELS ?= models
PY      = $(VENV)/bin/python

.PHONY: serve test install lint loadtest bench clean help
help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

serve:  ## install, create the default digits model if models/ has none, serve HTTP :3000 + gRPC :50051
	VENV=$(VENV) PYTHON=$(PYTHON) scripts/install.sh full
	VENV=$(VENV) scripts/default-model.sh $(MODELS)
	VENV=$(VENV) scripts/serve.sh --models $(MODELS)

test:  ## install and run the whole test suite
	VENV=$(VENV) PYTHON=$(PYTHON) scripts/install.sh full
	$(PY) -m pytest $(PYTEST_ARGS)

install:  ## create .venv and install Visor with training and dev extras
	VENV=$(VENV) PYTHON=$(PYTHON) scripts/install.sh full

lint:  ## ruff
	$(VENV)/bin/ruff check service training tests loadtests

clean:  ## remove the virtual environment and caches (models/ is kept)
	rm -rf $(VENV) .pytest_cache build *.egg-info
