# The README's commands. `make install` builds .venv from scratch on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[executorch,test]'
	touch $@

demo: install
	$(BIN)/python -m server.demo

test: install
	$(BIN)/python -m pytest -q -rs --durations=30 $(PYTEST_ARGS)

# ruff: pyflakes, pycodestyle, import order, bugbear and a complexity limit (pyproject.toml).
lint: install
	$(BIN)/ruff check .

clean:
	rm -rf var/ .pytest_cache test-artifacts
