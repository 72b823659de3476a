"""End to end: the real DAGs through Airflow on a tiny generated log.

One session run of `tasks.demo` (generate -> land/clean history -> real runs of purchase_intent_training and
purchase_intent_nightly on a LocalExecutor it starts and stops), then every command its summary prints, then
further real nightly runs against the same state (the `airflow` fixture; test_retraining.py reruns one).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

from tasks.airflow_env import free_port
from tasks.config import REPO_ROOT
from tasks.layers import class_archive_path, events_partition, features_partition, run_summary, training_set_dir
from tests.helpers.browser import stop
from tests.helpers.e2e import (
    LAST_DS,
    NIGHTLY_DAG,
    TRAINING_DAG,
    demo_runs_file,
    nightly,
    task_log,
    warehouse_rows,
)
from tests.helpers.jvm import start_driver

pytestmark = pytest.mark.e2e

# The demo's terminal output on success (the issue: 2,000 lines of library chatter).
MAX_DEMO_LINES = 60


def _summary_commands(demo: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^  \$ (.+)$", demo, re.MULTILINE)]


def test_demo_prints_a_short_summary(demo, env):
    _, cfg = env
    lines = demo.splitlines()
    assert len(lines) <= MAX_DEMO_LINES, demo
    assert sum(1 for ln in lines if re.match(r"\[\d/8\] .*\(\d+(m\d\ds|s)\)$", ln)) == 8, demo
    assert re.search(rf"^  scores:  \d+ rows for ds={LAST_DS} in ", demo, re.MULTILINE), demo
    assert re.search(
        rf"^  outcome: ds={LAST_DS - dt.timedelta(days=1)} v\d+: \d+ of \d+ scored users bought; ", demo, re.M
    )
    assert "models:/purchase_intent@champion = version" in demo
    assert f"full log: {cfg.paths.var / 'demo.log'}" in demo
    assert "Skipping registering function" not in demo and " INFO " not in demo
    log = (cfg.paths.var / "demo.log").read_text()
    assert 'Setting default log level to "WARN"' in log  # Spark's chatter went to the log, not away


def test_demo_runs_are_real_dag_runs(demo, env):
    _, cfg = env
    left = json.loads(demo_runs_file(cfg).read_text())
    runs, paused = left["runs"], left["paused"]
    assert [(r[0], r[1], r[2], r[3]) for r in runs] == [
        (NIGHTLY_DAG, f"demo__{LAST_DS - dt.timedelta(days=1)}", "manual", "success"),
        (NIGHTLY_DAG, f"demo__{LAST_DS}", "manual", "success"),
        (TRAINING_DAG, f"demo__{LAST_DS}", "manual", "success"),
    ]
    for *_, logical, start, end in runs:
        # A real run's start is when it ran (a `dags test` run started at its logical date: "321 days").
        duration = dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)
        assert dt.timedelta(0) < duration < dt.timedelta(hours=1)
        assert dt.datetime.fromisoformat(start) - dt.datetime.fromisoformat(logical) > dt.timedelta(days=1)
    # Paused again, as DAGs start: the user's `make airflow` schedules nothing on its own.
    assert paused == {NIGHTLY_DAG: 1, TRAINING_DAG: 1}
    # Each run's summary holds its final state, the last run's too, although the demo stopped Airflow after it.
    for dag_id, run_id, *_ in runs:
        summary = json.loads(run_summary(cfg, dag_id, run_id.removeprefix("demo__")).read_text())
        assert (summary["run_id"], summary["state"]) == (run_id, "success"), summary


def test_the_demos_class_archive_maps_into_a_new_driver(demo, env, tmp_path):
    _, cfg = env
    assert re.search(r"^\[2/8\] JVM class archive .*: built \(once;", demo, re.MULTILINE), demo
    archive = class_archive_path(cfg)
    assert archive.stat().st_size > 10 * 2**20
    assert [p.name for p in archive.parent.iterdir()] == [archive.name], "temporary dump left behind"
    # A blank in the path, as in a home folder on some machines: the JVM options must stay one item each.
    spaced = tmp_path / "with space" / "spark-classes.jsa"
    spaced.parent.mkdir()
    shutil.copyfile(archive, spaced)
    # -Xshare:on makes a JVM that cannot map every archive refuse to start.
    done = start_driver(tmp_path / "var", spaced, "-Xshare:on")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows 3" in done.stdout and "sharing" in done.stdout


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 300) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"{proc.args} exited with {proc.returncode}"
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=10) as resp:
                return int(resp.status)
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout_s}s"
        time.sleep(2)


def test_every_summary_command_works_as_printed(demo, env):
    environ, cfg = env
    commands = _summary_commands(demo)
    assert len(commands) >= 4, demo
    servers = {
        "make airflow": ("AIRFLOW__API__PORT", "/api/v2/monitor/health"),
        "make mlflow-ui": ("MLFLOW_UI_PORT", "/health"),
    }
    started: list[tuple[subprocess.Popen, str]] = []
    try:
        for command in commands:
            server = next((v for k, v in servers.items() if command.split("#")[0].strip().endswith(k)), None)
            if server is None:
                done = subprocess.run(
                    ["bash", "-c", command], cwd=REPO_ROOT, env=environ, capture_output=True, text=True, timeout=300
                )
                assert done.returncode == 0, f"{command}\n{done.stderr}"
                assert re.search(r"^\(\d+ rows?\)$", done.stdout, re.MULTILINE), done.stdout
                continue
            port_var, path = server
            port = free_port()
            proc = subprocess.Popen(
                ["bash", "-c", command],
                cwd=REPO_ROOT,
                env={**environ, port_var: str(port)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            started.append((proc, f"http://127.0.0.1:{port}{path}"))
        for proc, url in started:
            assert _wait_http(url, proc) == 200
    finally:
        # The whole server, not only its bash: a scheduler that outlived the test would run later modules' DAGs.
        for proc, _ in started:
            stop(proc)


def test_warehouse_rows_carry_the_champion(demo, env):
    _, cfg = env
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    champion = client.get_model_version_by_alias("purchase_intent", "champion")
    rows = warehouse_rows(
        cfg,
        f"select model_name, model_version, model_run_id, count(*), min(p_purchase), max(p_purchase) "
        f"from intent_scores where ds = '{LAST_DS}' group by all",
    )
    assert len(rows) == 1, rows
    name, version, run_id, n, lo, hi = rows[0]
    assert (name, str(version), run_id) == ("purchase_intent", str(champion.version), champion.run_id)
    assert n > 50 and 0.0 <= lo <= hi <= 1.0


def _stored_bytes(path) -> bytes:
    """A file's bytes as stored, plus what it holds once unpacked (Parquet as CSV, zip and gzip members)."""
    import gzip
    import zipfile

    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        return pq.read_table(path).to_pandas().to_csv().encode()
    data = path.read_bytes()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            data += b"".join(z.read(name) for name in z.namelist())
    elif data[:2] == b"\x1f\x8b":
        data += gzip.decompress(data)
    return data


def test_personal_data_pasted_into_queries_reaches_no_mlflow_artifact_or_warehouse_table(demo, env):
    """The demo's log has contact and card details pasted into some queries (tests.helpers.e2e.paste_personal_data):
    the models that read text carry the scrubbed queries, and no artifact, MLflow record or table carries the
    data."""
    _, cfg = env
    from pathlib import Path

    secrets = [b"john.doe", b"1111 1111", b"555-0132", b"7946 0958"]
    store = [p for p in Path(cfg.mlflow.artifact_root).rglob("*") if p.is_file()]
    store.append(Path(cfg.mlflow.resolved_tracking_uri.removeprefix("sqlite:///")))
    stored = {str(p): _stored_bytes(p) for p in store}
    assert len(stored) > 20
    # The pasted queries did reach the models, scrubbed: "email me at [email] pls" in a text-reading model's encoder.
    assert any(b"email me at [email] pls" in data for data in stored.values())
    leaked = {path: [s for s in secrets if s in data] for path, data in stored.items()}
    assert not {path: found for path, found in leaked.items() if found}

    columns = warehouse_rows(
        cfg,
        "select table_name, column_name from information_schema.columns "
        "where data_type in ('VARCHAR', 'text', 'character varying')",
    )
    assert {"intent_scores", "intent_model_health"} <= {table for table, _ in columns}
    for table, column in columns:
        matches = " or ".join(f"\"{column}\" like '%{s.decode()}%'" for s in secrets)
        assert warehouse_rows(cfg, f'select count(*) from "{table}" where {matches}') == [(0,)], (table, column)


def test_the_family_selected_on_validation_is_promoted_and_scores_with_reasons_and_categories(demo, env):
    _, cfg = env
    from mlflow import MlflowClient

    from tasks.registry import Candidate, choose

    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    champion = client.get_model_version_by_alias("purchase_intent", "champion")
    s = cfg.training.selection
    table = json.loads(champion.tags["selection_candidates"])
    # Every configured family competed in the training DAG run; the champion is the one the rule picks from them.
    assert sorted(c["model_type"] for c in table) == sorted(cfg.training.candidates)
    cands = [
        Candidate(
            c["run_id"], c["model_type"], {s.metric: c[f"val_{s.metric}"], s.tie_break: c[f"val_{s.tie_break}"]}, {}
        )
        for c in table
    ]
    chosen, _ = choose(cands, s.metric, s.tie_break, s.tie_margin)
    assert (champion.tags["model_type"], champion.run_id) == (chosen.model_type, chosen.run_id)
    # The tiny seeded log is data on which LightGBM is best on validation (purchase PR-AUC 0.472 against LR's 0.431,
    # LSTM's 0.413 and BERT's 0.369 when measured), so this run takes a tabular family through both DAGs.
    assert chosen.model_type == "lightgbm", table
    # The nightly scores of that family carry its reasons and its pair model's top categories.
    ((n, with_reasons, with_top),) = warehouse_rows(
        cfg, f"select count(*), count(reasons), count(top_categories) from intent_scores where ds = '{LAST_DS}'"
    )
    assert with_reasons == n and with_top > 0.5 * n, (champion.tags["model_type"], n, with_reasons, with_top)


def test_the_training_run_pretrained_the_encoder_and_its_family_started_from_it(demo, env):
    _, cfg = env
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    encoder = client.get_model_version_by_alias(cfg.pretrain.model_name, cfg.pretrain.alias)
    assert encoder.tags["training_set_id"] == f"{LAST_DS}-h{cfg.features.horizon_days}"
    uri = f"models:/{cfg.pretrain.model_name}/{encoder.version}"
    assert f"registered {uri}" in task_log(cfg, TRAINING_DAG, LAST_DS, "pretrain")
    pretrain_run = client.get_run(encoder.run_id).data
    # Held-out masked-event accuracy sits beside the majority guess (whether it beats it on real-size data is
    # bench pretraining_ablation's question; tests/unit/test_pretraining.py checks that the objective learns).
    for field in ("event_type", "category", "item"):
        assert 0 <= pretrain_run.metrics[f"majority_acc_{field}"] <= 1
        assert 0 <= pretrain_run.metrics[f"holdout_acc_{field}"] <= 1
    assert int(pretrain_run.params["n_train_rows"]) > 0 and pretrain_run.params["world_size"] == "2"
    champion = client.get_model_version_by_alias("purchase_intent", "champion")
    runs = {c["model_type"]: c["run_id"] for c in json.loads(champion.tags["selection_candidates"])}
    started = {family: client.get_run(run_id).data.params.get("init_from") for family, run_id in runs.items()}
    assert started[cfg.pretrain.model_type] == uri
    assert int(client.get_run(runs[cfg.pretrain.model_type]).data.params["init_tensors"]) > 0
    # The other torchrun family starts from fresh weights; the tabular ones have no encoder to start from.
    assert started["lstm"] == "none" and started["lightgbm"] is None


def test_training_checked_for_new_data_and_nightly_logged_drift(demo, env):
    _, cfg = env
    from mlflow import MlflowClient

    # The training run's skip check ran with the horizon parameter and found no champion.
    assert "check_new_data: train (no champion yet)" in task_log(cfg, TRAINING_DAG, LAST_DS, "check_new_data")
    assert (training_set_dir(cfg, f"{LAST_DS}-h{cfg.features.horizon_days}") / "manifest.json").is_file()
    # The nightly run measured drift against the champion's training set and logged it.
    report = json.loads((cfg.paths.runs_dir / "drift" / f"{LAST_DS}.json").read_text())
    assert report["reference"].endswith(f"{LAST_DS}-h{cfg.features.horizon_days}/train") and report["psi"]
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    champion = client.get_model_version_by_alias("purchase_intent", "champion")
    exp = client.get_experiment_by_name(cfg.mlflow.monitoring_experiment)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.ds = '{LAST_DS}'")
    assert len(runs) == 1 and runs[0].data.tags["model_version"] == str(champion.version)


def test_a_scored_day_is_judged_once_its_label_window_has_closed(demo, env):
    _, cfg = env
    from mlflow import MlflowClient

    earlier = LAST_DS - dt.timedelta(days=1)
    # The demo scored `earlier`, then LAST_DS. At cutoff `earlier` nothing had closed; the run at LAST_DS judged
    # `earlier` against the events of its day, which had landed by then; LAST_DS's own window is still open.
    log = task_log(cfg, NIGHTLY_DAG, earlier, "evaluate_outcomes")
    assert f"outcomes at cutoff {earlier}: no scored day whose label window closed" in log
    assert f"ds={earlier}" in task_log(cfg, NIGHTLY_DAG, LAST_DS, "evaluate_outcomes")
    rows = warehouse_rows(
        cfg, "select ds, model_version, role, n_users, n_buyers, purchase_roc_auc from intent_score_outcomes"
    )
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    champion = client.get_model_version_by_alias("purchase_intent", "champion")
    ((scored,),) = warehouse_rows(cfg, f"select count(*) from intent_scores where ds = '{earlier}'")
    assert len(rows) == 1, rows
    ds, version, role, n_users, n_buyers, auc = rows[0]
    assert (ds, version, role, n_users) == (earlier, str(champion.version), "champion", scored)
    assert 0 < n_buyers < n_users
    # `earlier` is the champion's test cutoff: the same users, features and labels, so the realized metric
    # repeats the test metric that training logged, computed by another path (Spark labels, warehouse rows).
    test_auc = client.get_run(champion.run_id).data.metrics["test/purchase_roc_auc"]
    assert auc == pytest.approx(test_auc, abs=0.01)
    ((versions, days_7d),) = warehouse_rows(cfg, "select count(*), max(days_7d) from intent_model_health")
    assert (versions, days_7d) == (1, 1)


def test_one_row_per_active_user(demo, env):
    _, cfg = env
    import pyarrow.parquet as pq

    features = pq.read_table(features_partition(cfg, "user", LAST_DS)).to_pandas()
    ((n, distinct),) = warehouse_rows(
        cfg, f"select count(*), count(distinct user_id) from intent_scores where ds = '{LAST_DS}'"
    )
    assert n == distinct == features["user_id"].nunique() == len(features)


def test_bad_day_stops_the_run_and_writes_nothing(airflow, env):
    _, cfg = env
    bad_day = LAST_DS  # not generated: we deliver a broken export for it
    ds = bad_day + dt.timedelta(days=1)
    incoming = cfg.paths.incoming / "synthetic" / f"dt={bad_day}"
    incoming.mkdir(parents=True, exist_ok=True)
    header = "event_time,user_id,item_id,category_id,event_type,price,session_id,query,brand,category_code"
    good = [f"{bad_day}T10:00:{i:02d}Z,u{i},i{i},c1,view,1.0,s{i},,," for i in range(50)]
    bad = [f"{bad_day}T11:00:{i:02d}Z,u{i},i{i},c1,teleport,-5.0,s{i},,," for i in range(20)]
    (incoming / "events.csv").write_text("\n".join([header, *good, *bad]) + "\n")

    result = nightly(airflow, ds)
    assert result.state == "failed"
    failed_task, log = result.failed[0]
    assert failed_task == "clean_events" and log is not None
    assert "unknown_event_type" in log.read_text()
    assert warehouse_rows(cfg, f"select count(*) from intent_scores where ds = '{ds}'") == [(0,)]
    assert not features_partition(cfg, "user", ds).exists()
    assert not events_partition(cfg, bad_day).exists()
