"""``python -m tasks.backtest`` on the real Taobao sample, as a user runs it: every stage (Spark cleaning and
training set, the Great Expectations gate, torchrun and in-process training), the report's contents, the MLflow
parent run with the trainings nested under it, and a range past the data refused with one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from tasks.backtest_report import BOOTSTRAP_METRICS
from tasks.config import REPO_ROOT
from tests.conftest import shared_data
from tests.helpers.config import isolated_config

TRAIN, VAL, TEST = "2017-11-26:2017-11-29", "2017-11-30", "2017-12-01"


def _backtest(config, tmp_path, name: str, *args: str, sample=None) -> subprocess.CompletedProcess:
    sample = sample or shared_data("taobao_userbehavior_sample.csv")
    return subprocess.run(
        [
            sys.executable, "-m", "tasks.backtest", "--config", str(config), "--source", "taobao",
            "--input", str(sample), "--work-dir", str(tmp_path / name), *args,
        ],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def test_backtest_on_the_taobao_sample(tmp_path):
    cfg = isolated_config(tmp_path / "var")
    config = tmp_path / "pipeline.json"
    config.write_text(json.dumps(cfg.model_dump(mode="json")))

    done = _backtest(
        config, tmp_path, "work", "--train", TRAIN, "--val", VAL, "--test", TEST,
        "--candidates", "lr,lstm", "--seeds", "2", "--epochs", "1", "--bootstrap", "200",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "work" / "report"
    assert done.stdout.strip().splitlines()[-1] == str(out / "report.md")
    # One line per stage on the terminal; the stages' output went to the log.
    assert "[8/8] report: " in done.stdout and "INFO" not in done.stdout
    log = (tmp_path / "work" / "backtest.log").read_text()
    assert "===== [4/8] training set (Spark)" in log and "lr in one process; 2862 train rows" in log

    report = json.loads((out / "report.json").read_text())
    assert report["cutoffs"] == {"train": [f"2017-11-{d}" for d in (26, 27, 28, 29)], "val": [VAL], "test": [TEST]}
    assert report["timezone"] == "Asia/Shanghai"  # the dataset's own business day
    assert (Path(report["layers"]["training_set"]) / "manifest.json").is_file()
    assert report["data"]["test"]["rows"] == 814 and report["data"]["test"]["buyers"] > 50
    labels = [m["label"] for m in report["models"]]
    assert labels == [
        "heuristic", "lr (seed 13)", "lr (seed 14)", "lstm (seed 13)", "lstm (seed 14)",
        "lr (mean of 2 seeds)", "lstm (mean of 2 seeds)",
    ]  # fmt: skip
    for m in report["models"]:
        for name in ("roc_auc", "pr_auc", "recall_top_10pct", "hit_rate", "ndcg", "pair_roc_auc", "pair_pr_auc"):
            assert 0.0 <= m["metrics"][name] <= 1.0, (m["label"], name)
        if m["kind"] != "heuristic":
            assert 0.0 <= m["metrics"]["ece"] < 0.2 and m["metrics"]["log_loss"] > 0
    # Intervals of the headline models, a comparison per metric with the best yardstick, the spread of the seeds.
    assert set(report["intervals"]) == {"heuristic", "lr (mean of 2 seeds)", "lstm (mean of 2 seeds)"}
    lo, hi = report["intervals"]["lstm (mean of 2 seeds)"]["roc_auc"]
    lstm = next(m for m in report["models"] if m["label"] == "lstm (mean of 2 seeds)")["metrics"]["roc_auc"]
    assert lo < lstm < hi
    # The sample's test day has buyers in categories its train days never mention: they are ranked too.
    assert {c["metric"] for c in report["bootstrap"]["comparisons"]} == set(BOOTSTRAP_METRICS)
    unseen = report["models"][0]["metrics"]
    assert unseen["unseen_buyer_days"] > 0 and 0.0 <= unseen["top1_unseen"] <= unseen["hit_rate_unseen"] <= 1.0
    assert "unseen: over the" in (out / "report.md").read_text()
    assert {s["model"] for s in report["seed_spread"]} == {"lr", "lstm"}
    assert (
        report["selection"]["model"] in ("lr", "lstm") and "validation purchase_pr_auc" in report["selection"]["reason"]
    )
    md = (out / "report.md").read_text()
    assert "## Against the best yardstick (paired bootstrap)" in md and "## Spread over seeds" in md
    assert (out / "curves.png").stat().st_size > 10_000
    users = pd.read_parquet(out / "predictions_users.parquet")
    assert len(users) == 7 * 814 and users["p_purchase"].between(0, 1).all()
    assert len(pd.read_parquet(out / "predictions_pairs.parquet")) == 7 * report["data"]["test"]["candidate_rows"]

    # One MLflow parent run; the four trainings nested under it; nothing registered.
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    parent = client.get_run(report["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["selected"] == report["selection"]["model"]
    assert parent.data.metrics["lstm/roc_auc"] == lstm
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {
        "report/report.md", "report/report.json", "report/curves.png",
    }  # fmt: skip
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.params["model_type"] for r in children) == ["lr", "lr", "lstm", "lstm"]
    assert not client.search_model_versions(f"name = '{cfg.mlflow.model_name}'")

    # A test day whose labels are not in the data: one line naming it, exit 65, no report.
    late = _backtest(
        config, tmp_path, "late", "--train", "2017-11-27:2017-11-30", "--val", "2017-12-01", "--test", "2017-12-02"
    )
    assert late.returncode == 65, late.stdout + late.stderr
    assert late.stderr.strip().splitlines()[-1] == (
        "DATA ERROR (BacktestError): the label window of the test cutoff 2017-12-02 (1 day(s)) has not passed: it "
        "needs events through 2017-12-02, the data ends 2017-12-01; choose a test cutoff up to 2017-12-01"
    )
    assert not (tmp_path / "late" / "report").exists()
    failed = client.search_runs([parent.info.experiment_id], "attributes.status = 'FAILED'")
    assert [r.info.run_name for r in failed] == ["backtest-taobao-2017-12-02"]

    # An export the loader cannot read: the stage fails with the cleaning step's own reason.
    garbage = tmp_path / "export.csv"
    garbage.write_text("this is not,a taobao,export\n" * 3)
    bad = _backtest(config, tmp_path, "bad", "--train", TRAIN, "--val", VAL, "--test", TEST, sample=garbage)
    assert bad.returncode == 65, bad.stdout + bad.stderr
    assert "[2/8] clean (Spark): FAILED" in bad.stdout
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("DATA ERROR (BacktestError): spark_jobs.clean_events exited with code 65: DATA ERROR ("), (
        last
    )
