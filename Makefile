# One entry point for people and CI. `make test` is what .ci/run calls.
.PHONY: setup test lint run screenshots bench clean

VENV := .venv
BIN := $(VENV)/bin
export QT_QPA_PLATFORM ?= offscreen

setup:
	scripts/bootstrap.sh --peers

test: setup lint
	$(BIN)/pytest -q

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy r3mes_desktop/core

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tests/peers/node_modules
