# The README's two commands: `make run` (the service with the default model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

.PHONY: run test venv venv-serve lint check-deploy bench notebook clean

$(VENV)/.installed-all: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[train,serve,batch,feedback,dev]'
	touch $@

venv: $(VENV)/.installed-all

# Serving needs no torch: its own small environment installs in seconds.
.venv-serve/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-serve
	.venv-serve/bin/pip install -q --upgrade pip
	.venv-serve/bin/pip install -q -e '.[serve]'
	touch $@

venv-serve: .venv-serve/.installed

run: venv-serve
	.venv-serve/bin/seedlings serve --host 127.0.0.1 --port 8000

# ruff, then the contracts: layers import downwards only, no import cycles, serving never reaches torch
# (docs/architecture.md); every train and serve setting has its flag (tests/cli/test_flags.py)
lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/test_layers.py tests/cli/test_flags.py

test: venv lint check-deploy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

check-deploy: venv
	@if [ -x deploy/check.sh ]; then deploy/check.sh; else echo "check-deploy: no deploy/check.sh yet"; fi

bench: venv
	$(PY) bench/train_throughput.py

# JupyterLab on notebooks/, with the package installed (editable) and the notebook extra.
$(VENV)/.installed-notebook: $(VENV)/.installed-all
	$(PIP) install -q -e '.[train,serve,batch,dev,notebook]'
	touch $@

notebook: venv $(VENV)/.installed-notebook
	$(VENV)/bin/jupyter lab --notebook-dir notebooks

clean:
	rm -rf $(VENV) .venv-serve .pytest_cache build *.egg-info src/*.egg-info
