# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-chaos check lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mailconsole demo

test: lint
	$(BIN)/mypy mailconsole tests
	$(BIN)/pytest -q

test-chaos: $(STAMP)
	$(BIN)/pytest -q -m chaos

lint: $(STAMP)
	$(BIN)/ruff format --check mailconsole tests bench
	$(BIN)/ruff check mailconsole tests bench
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format mailconsole tests bench
	$(BIN)/ruff check --fix mailconsole tests bench

check: test

bench: $(STAMP)
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/bulk_replay.py
	$(BIN)/python bench/dead_list.py

clean:
	rm -rf $(VENV) build *.egg-info
