# The README's commands. `make install` builds .venv from scratch on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint docs docs-generate clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[executorch,test,docs]'
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
# ... and the documentation site, built with --strict (a broken link or anchor fails) into a temp dir.
lint: install
	$(BIN)/ruff check .
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir "$$tmp/site"

# The documentation site on http://127.0.0.1:$(DOCS_PORT)/ , rebuilt on every save.
DOCS_PORT ?= 8001
docs: install
	@echo "docs: http://127.0.0.1:$(DOCS_PORT)/"
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:$(DOCS_PORT)

# The pages generated from the code (job config, settings, REST API); run after a merge adds fields.
docs-generate: install
	$(BIN)/python -m server.docs_generate

clean:
	rm -rf var/ .pytest_cache test-artifacts site
