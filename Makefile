# Two entry points for a fresh machine with Python >= 3.11 and make:
#   make demo   -- bootstrap .venv, install jaxsr, run `jaxsr demo`
#   make test   -- bootstrap .venv with the test extra, run the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= jaxsr-demo

.PHONY: demo test venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files make both targets idempotent: reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/jaxsr demo --out $(DEMO_OUT) --overwrite

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -q

clean:
	rm -rf $(VENV) $(DEMO_OUT)
