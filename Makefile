# The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip warns about this machine's optional local package mirrors on every line; keep real messages only.
PIPQUIET := (grep -v "is ignored: it is neither a file nor a directory" || true)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-nodeps.txt requirements-dev.txt | sha1sum | cut -c1-12)

export PYTHONUNBUFFERED := 1
export PYTHONPATH := $(CURDIR)
# spark-submit, torchrun and airflow resolve from the project's virtualenv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv demo lint test test-fast bench jvm-archive airflow mlflow-ui clean

venv: $(STAMP)

# torch is installed first from its pinned CPU build, so no other package's range pulls a CUDA build.
$(STAMP): requirements.txt requirements-nodeps.txt requirements-dev.txt
	@echo ">>> creating/updating $(VENV) from requirements.txt"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo ">>> installing pinned packages (a few minutes on the first run)"
	@$(PY) -m pip install --quiet --upgrade pip 2>&1 | $(PIPQUIET)
	@$(PY) -m pip install --quiet "$$(grep -E '^torch==' requirements.txt)" 2>&1 | $(PIPQUIET)
	@$(PY) -m pip install --quiet -r requirements.txt 2>&1 | $(PIPQUIET)
	@$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt 2>&1 | $(PIPQUIET)
	@$(PY) -m pip install --quiet -r requirements-dev.txt 2>&1 | $(PIPQUIET)
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo ">>> $(VENV) ready"

# Real DAG runs on an Airflow it starts and stops; one line per step, the libraries' output in var/demo.log.
demo: venv
	@$(PY) -m tasks.demo

# Lint and type checks: seconds, so every test run starts with them.
lint: venv
	@$(VENV)/bin/ruff check --quiet .
	@$(VENV)/bin/ruff format --check --quiet .
	@$(VENV)/bin/mypy

# Two pytest processes side by side, one per core: the e2e tier (its files share one demo, which
# pytest-xdist's loadgroup cannot keep on one worker under pytest 9.2) and every other tier. The e2e tier's
# output goes to var/test-e2e.log and is printed after the rest; either failing fails the target.
test: lint
	@mkdir -p var
	@echo ">>> tests/e2e runs beside the other tiers; its output: var/test-e2e.log (printed at the end)"
	@$(PY) -m pytest tests/e2e --basetemp=var/pytest-e2e > var/test-e2e.log 2>&1 & e2e=$$!; \
	trap 'kill $$e2e 2>/dev/null' INT TERM; \
	$(PY) -m pytest --ignore=tests/e2e --basetemp=var/pytest-rest; rest=$$?; \
	wait $$e2e; e2e_rc=$$?; \
	echo ">>> tests/e2e (var/test-e2e.log):"; cat var/test-e2e.log; \
	echo ">>> exit status: other tiers $$rest, e2e tier $$e2e_rc"; \
	test $$rest -eq 0 -a $$e2e_rc -eq 0

# The tier that needs no JVM and no torchrun (tests/unit, tests/dags; tiers: tests/conftest.py), one worker per core.
test-fast: venv
	@$(PY) -m pytest -n auto --dist loadfile tests/unit tests/dags

bench: venv
	@$(PY) -m bench.run

# Rebuild the JVM class archive Spark drivers map at start-up (after a Java or pyspark upgrade).
jvm-archive: venv
	@$(PY) -m spark_jobs.class_archive

# Processes sized by `services` in conf/pipeline.yaml; another port: AIRFLOW__API__PORT=8081 make airflow.
airflow: venv
	@$(PY) -m tasks.airflow_env standalone

# Workers sized by `services` in conf/pipeline.yaml; another port: MLFLOW_UI_PORT=5001 make mlflow-ui.
mlflow-ui: venv
	@$(PY) -m tasks.mlflow_ui

clean:
	rm -rf var
