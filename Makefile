# Two entry points for a fresh clone: `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin

.PHONY: demo test lint test-long bench bench-quick clean

demo: $(VENV)/.installed
	$(BIN)/jupyter-agent demo

test: $(VENV)/.installed $(VENV)/.labextension lint
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check jupyter_agent tests bench
	$(BIN)/ruff format --check jupyter_agent tests bench
	$(BIN)/mypy

# long trials kept out of CI (see README)
test-long: $(VENV)/.installed
	$(BIN)/pytest -m slow

# the peers (LangGraph, DBOS) come with the `bench` extra
bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m bench

bench-quick: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m bench --quick

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# the lab extension's bundle (which holds the widget's page code too) is made by the install
# and kept by later ones: built again here when its sources change, and the lab is pointed at
# the build (the install copied it), so the browser tests see what the tree holds
$(VENV)/.labextension: $(VENV)/.installed $(wildcard labextension/src/*.ts labextension/style/*) \
		jupyter_agent/static/widget.js labextension/package.json
	cd labextension && PATH="$(abspath $(BIN)):$$PATH" npm run build:prod
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/jupyter labextension develop --overwrite . >/dev/null
	touch $@

clean:
	rm -rf $(VENV) build dist *.egg-info
