# The README's commands. `make install` builds .venv from scratch on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[executorch,test]'
	touch $@

demo: install
	$(BIN)/python -m server.demo

# The whole suite; it ends with the 30 slowest tests and a line counting the tests run per marker.
test: install
	$(BIN)/python -m pytest -q -rs --durations=30 $(PYTEST_ARGS)

# The tests that need no training or torchrun, no PostgreSQL/Redis/Celery or service, no browser
# (the markers are in pyproject.toml): well under 3 minutes on 2 cores.
FAST_MARKERS := not slow and not integration and not browser
test-fast: install
	$(BIN)/python -m pytest -q -rs --durations=10 -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

# ruff: pyflakes, pycodestyle, import order, bugbear and a complexity limit (pyproject.toml).
lint: install
	$(BIN)/ruff check .

clean:
	rm -rf var/ .pytest_cache test-artifacts
