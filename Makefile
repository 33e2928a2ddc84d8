# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv from requirements.lock.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export DS_ACCELERATOR ?= cpu

.PHONY: install demo test test-unit test-latest lint lock clean learn

# Everything comes from the lock (torch's line is the 2.13.0 CPU wheel on these machines); pip-sync removes
# whatever an older lock left behind, and the project itself is installed editable with --no-deps, so nothing
# outside the lock can slip in. `pip check` proves the set whole.
$(STAMP): requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$$(grep '^pip==' requirements.lock)"
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip-sync -q requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/llavast demo

test: $(STAMP)
	$(BIN)/pytest tests

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

# The learning benchmark (docs/results.md): the tiny model trained end to end, against baselines (~30 min).
learn: $(STAMP)
	$(BIN)/python -m benchmarks.learning --fresh

lint: $(STAMP)
	$(BIN)/ruff check platform model_zoo tests benchmarks

# Regenerate requirements.lock from pyproject.toml's ranges and constraints.txt. Existing pins are kept unless
# UPGRADE=1 (every distribution to its newest allowed release) or UPGRADE_PACKAGE=name (that one only).
LOCK_FLAGS := $(if $(UPGRADE),--upgrade) $(if $(UPGRADE_PACKAGE),--upgrade-package $(UPGRADE_PACKAGE))
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --extra dev --allow-unsafe --strip-extras --no-emit-index-url \
	  --no-emit-find-links $(LOCK_FLAGS) -c constraints.txt -o requirements.lock pyproject.toml

# The same suite against the newest release of every dependency (no lock), in its own venv.
LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	$(LATEST)/bin/pip install -q torch==2.13.0
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -c constraints.txt -e ".[dev]"
	$(LATEST)/bin/pip check
	$(LATEST)/bin/pip freeze --exclude-editable > $(LATEST)/versions.txt
	$(LATEST)/bin/pytest tests -m "not installed_from_lock" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(LATEST) .demo .learn .pytest_cache
