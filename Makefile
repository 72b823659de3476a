# The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-nodeps.txt | sha1sum | cut -c1-12)

export PYTHONUNBUFFERED := 1
export PYTHONPATH := $(CURDIR)

.PHONY: venv demo test test-fast bench airflow mlflow-ui clean

venv: $(STAMP)

# torch is installed first from its pinned CPU build, so no other package's range pulls a CUDA build.
$(STAMP): requirements.txt requirements-nodeps.txt
	@echo ">>> creating/updating $(VENV) from requirements.txt"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet "$$(grep -E '^torch==' requirements.txt)"
	@$(PY) -m pip install --quiet -r requirements.txt
	@$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo ">>> $(VENV) ready"

demo: venv
	@$(PY) -m tasks.demo

test: venv
	@$(PY) -m pytest

test-fast: venv
	@$(PY) -m pytest -m "not e2e"

bench: venv
	@$(PY) -m bench.run

airflow: venv
	@$(PY) -m tasks.airflow_env standalone

mlflow-ui: venv
	@$(PY) -m tasks.mlflow_ui

clean:
	rm -rf var
