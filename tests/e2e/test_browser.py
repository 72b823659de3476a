"""The first hour in a browser (issue 29): after `make demo`, the Airflow UI as `make airflow` starts it and the
MLflow UI as `make mlflow-ui` starts it, driven by Debian's chromium (headless, through Playwright).

Airflow: log in, trigger purchase_intent_training with the form's defaults, and see the run succeed or stop
within a minute, with its one-line reason on the failed task's page. MLflow: open the training experiment and
land on its runs. Each step's screenshot lands in the test's tmp dir; a failure names the last step and the page.
Without chromium the module skips (CI=true: fails).
"""

from __future__ import annotations

import json
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.browser import (
    Steps,
    airflow_ready,
    answers,
    chromium_path,
    free_port,
    serve,
    wait_until,
)

pytestmark = pytest.mark.e2e

TRAINING_DAG = "purchase_intent_training"
# The promise: a run triggered with the form's defaults succeeds or stops within a minute.
RUN_LIMIT_S = 60
# What a run that finds no events for its dates says (tasks/availability.py's one line).
NO_DATA_REASON = re.compile(r"no events landed for \d{4}-\d{2}-\d{2}")
# Page loads on a busy 2-core machine: the UIs answer, but slowly.
UI_TIMEOUT_MS = 60_000


@dataclass
class UIs:
    airflow: str
    airflow_password: str
    mlflow: str
    logs: Path  # the servers' output: airflow.log, mlflow.log


@pytest.fixture(scope="session")
def chromium() -> str:
    # Session-scoped and requested first, so a missing chromium skips before the demo runs.
    return chromium_path()


@pytest.fixture(scope="module")
def uis(demo, env, tmp_path_factory):
    """Both UIs on free ports, started together (their start-ups overlap), stopped with everything they
    started whatever the tests do."""
    environ, cfg = env
    logs = tmp_path_factory.mktemp("uis")
    af_port, ml_port = free_port(), free_port()
    airflow, mlflow = f"http://127.0.0.1:{af_port}", f"http://127.0.0.1:{ml_port}"
    airflow_environ = {
        **environ,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(af_port),
        # Tasks report to the API server; its default address is port 8080.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{airflow}/execution/",
    }
    with ExitStack() as stack:
        af = stack.enter_context(
            serve(airflow_environ, ["-m", "tasks.airflow_env", "standalone"], logs / "airflow.log")
        )
        # The server's job runner (GenAI jobs: seven resident consumer processes) serves nothing these pages need.
        mlflow_environ = {**environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        mlflow_ui = ["-m", "tasks.mlflow_ui", "--port", str(ml_port)]
        ml = stack.enter_context(serve(mlflow_environ, mlflow_ui, logs / "mlflow.log"))
        wait_until("the MLflow UI answering", answers(mlflow), ml, logs / "mlflow.log", timeout=300)
        wait_until(
            "the Airflow API server with a healthy scheduler, DAG processor and triggerer",
            airflow_ready(airflow),
            af,
            logs / "airflow.log",
            timeout=300,
        )
        passwords = cfg.paths.airflow_home / "simple_auth_manager_passwords.json.generated"
        yield UIs(airflow, json.loads(passwords.read_text())["admin"], mlflow, logs)


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def steps(browser, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=UI_TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    yield Steps(page, tmp_path / "screenshots")
    context.close()


def test_training_triggered_with_defaults_ends_within_a_minute_with_its_reason(chromium, uis, steps):
    from playwright.sync_api import expect

    page = steps.page
    with steps.recording(f"Airflow's output: {uis.logs / 'airflow.log'}"):
        page.goto(uis.airflow)
        page.locator("input[name=username]").fill("admin")
        page.locator("input[name=password]").fill(uis.airflow_password)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("nav-sidebar")).to_be_visible()
        steps.shot("logged-in")

        page.goto(f"{uis.airflow}/dags")
        page.get_by_role("link", name=TRAINING_DAG, exact=True).first.click()
        page.wait_for_url(f"**/dags/{TRAINING_DAG}")
        # The DAG's own page (its tasks), not the list it was opened from.
        expect(page.get_by_text("check_new_data", exact=True).first).to_be_visible()
        steps.shot("dag-page")

        # The page also holds a hidden copy of the header's buttons (the narrow layout).
        page.get_by_test_id("trigger-dag-button").filter(visible=True).click()
        submit = page.get_by_test_id("trigger-dag-submit")
        expect(submit).to_be_enabled()
        steps.shot("trigger-form")
        submit.click()
        triggered = time.monotonic()

        # The UI follows the new run to its page.
        page.wait_for_url(f"**/dags/{TRAINING_DAG}/runs/manual__*")
        run_state = page.get_by_test_id("header-card").get_by_test_id("state-badge")
        left_ms = (RUN_LIMIT_S - (time.monotonic() - triggered)) * 1000
        expect(run_state, f"the run neither succeeded nor failed within {RUN_LIMIT_S}s of the trigger").to_have_text(
            re.compile(r"^\s*(Success|Failed)\s*$"), timeout=max(left_ms, 1)
        )
        steps.shot("run-ended")
        if run_state.inner_text().strip() == "Success":
            return

        failed = page.get_by_role("row").filter(
            has=page.get_by_test_id("state-badge").get_by_text("Failed", exact=True)
        )
        failed.first.get_by_role("link").first.click()
        page.wait_for_url(f"**/dags/{TRAINING_DAG}/runs/manual__*/tasks/*")
        reason = page.get_by_text(NO_DATA_REASON).first
        expect(reason, "the failed task's page shows no one-line reason").to_be_visible()
        steps.shot("failed-task-reason")


def test_mlflow_lands_on_the_training_runs(chromium, uis, steps, env):
    from mlflow import MlflowClient
    from playwright.sync_api import expect

    _, cfg = env
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    champion = client.get_model_version_by_alias(cfg.mlflow.model_name, cfg.mlflow.champion_alias)
    run_name = client.get_run(champion.run_id).info.run_name
    page = steps.page
    with steps.recording(f"MLflow's output: {uis.logs / 'mlflow.log'}"):
        # The link `make mlflow-ui` prints: MLflow 3.17 opens an experiment clicked in its list on the GenAI view.
        printed = re.search(r"training runs of experiment \S+: (\S+)", (uis.logs / "mlflow.log").read_text())
        assert printed, "make mlflow-ui printed no link to the training runs"
        page.goto(printed.group(1))
        expect(
            page.get_by_role("link", name=run_name, exact=True).first,
            f"the experiment page lists no run {run_name!r}: it did not open on the training runs",
        ).to_be_visible()
        steps.shot("runs")
