# The two commands that do everything on a fresh machine:
#   make plan   installs the pinned toolchain into .venv and runs the offline plan of byoc-example
#   make test   installs the same and runs the test suite (it needs PostgreSQL's server binaries;
#               .ci/run installs them from Debian packages when they are missing)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STACK ?= byoc-example

.PHONY: plan test bench clean

$(BIN)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

plan: $(BIN)/.installed
	$(BIN)/perfloop-platform plan --stack $(STACK) --out build/plan.json

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.plan_time --stack $(STACK)

clean:
	rm -rf $(VENV) build
