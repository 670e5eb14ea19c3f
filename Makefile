# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# sentence-transformers pulls torch; ask for the CPU build first so pip never fetches a CUDA one.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# schemathesis' command line for the contract test, pinned in a venv of its own (its
# jsonschema-rs conflicts with langgraph-api's); rebuilt whenever the pin changes.
CONTRACT_VENV ?= .venv-contract
CONTRACT_PIN := tests/contract/requirements.txt

.PHONY: run test lint typecheck pytest migrate bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/switchboard serve

migrate: $(VENV)/.installed
	$(BIN)/switchboard migrate

$(CONTRACT_VENV)/.installed: $(CONTRACT_PIN)
	rm -rf $(CONTRACT_VENV)
	$(PYTHON) -m venv $(CONTRACT_VENV)
	$(CONTRACT_VENV)/bin/pip install --quiet --upgrade pip
	$(CONTRACT_VENV)/bin/pip install --quiet -r $(CONTRACT_PIN)
	touch $@

# The JS client tests' packages (tests/js: @langchain/langgraph-sdk from npm), from the lock.
JS_TESTS := tests/js/node_modules/.package-lock.json
$(JS_TESTS): tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund --loglevel=error

test: $(VENV)/.installed-dev $(JS_TESTS) $(CONTRACT_VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) $(CONTRACT_VENV) .mypy_cache .ruff_cache .pytest_cache tests/js/node_modules
