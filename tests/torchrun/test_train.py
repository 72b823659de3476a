"""torchrun training (2 gloo processes), MLflow logging and lineage, crash resume, the validation gate,
the new/returning breakdown, the Optuna search, the packaged pyfunc contract and DDP parity."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tasks.config import REPO_ROOT
from tasks.errors import EXIT_DATA_ERROR, run_cli
from tasks.evaluate import BEST_EPOCH, BEST_VAL_SCORE, TRAIN_LOSS, metric_name
from tasks.experiments import CUSTOM_MODEL_DEVELOPMENT, EXPERIMENT_KIND_TAG
from tasks.layers import training_set_dir
from tasks.registry import mlflow_store
from tasks.schema import PROBABILITY_COLUMNS, SEQUENCE_COLUMNS
from tasks.train import main
from tasks.training.build import lr_lambda, positive_weights
from tasks.training.data import TrainingError, UnvalidatedTrainingSetError, read_manifest, require_validation
from tasks.training.launcher import launch
from tests.helpers.config import isolated_config
from tests.helpers.trainingset import FEATURE_COLUMNS, with_candidate_arrays, write_training_set


def _cfg(var: Path, **training):
    return isolated_config(var, training={"batch_size": 64, "embedding_dim": 16, "hidden_dim": 32, **training})


def _with_long_window(ts: Path) -> Path:
    """Add f_view_count_30d (7-day views plus one per 30-day purchase), so the set has the two count windows
    the new/returning split compares (training.new_user_days = 7): users with a purchase are returning."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for part in sorted(ts.glob("*/*.parquet")):
        t = pq.read_table(part)
        longer = pc.add(t.column("f_view_count_7d"), pc.fill_null(t.column("f_purchase_count_30d"), 0.0))
        pq.write_table(t.append_column(pa.field("f_view_count_30d", pa.float64()), longer), part)
    manifest = json.loads((ts / "manifest.json").read_text())
    manifest["feature_columns"].append("f_view_count_30d")
    (ts / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return ts


@pytest.fixture(scope="module")
def trained(tmp_path_factory, spark):
    from spark_jobs.validate import validate_training_set

    root = tmp_path_factory.mktemp("train")
    cfg = _cfg(root / "var")
    ts = _with_long_window(write_training_set(training_set_dir(cfg, "ts_small"), n_users=200, seed=1))
    validate_training_set(cfg, "ts_small")
    result = launch(cfg, ts, model_type="lstm", epochs=2, nproc=2)
    return cfg, ts, result


def test_torchrun_two_processes_register_a_version(trained):
    cfg, ts, result = trained
    assert result.model_version == "1"
    assert result.model_uri == f"models:/{cfg.mlflow.model_name}/1"
    assert json.loads(result.output.read_text())["model_version"] == "1"
    # The data has real signal; two epochs must beat chance on the purchase head.
    assert result.test_metrics["purchase_roc_auc"] > 0.6

    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2"
    assert run.data.params["training_set_id"] == "ts_small"
    assert run.data.params["model_type"] == "lstm"
    assert [m.step for m in client.get_metric_history(result.run_id, TRAIN_LOSS)] == [1, 2]
    assert [m.step for m in client.get_metric_history(result.run_id, "val/purchase_pr_auc")] == [1, 2]
    for key in (
        "test/purchase_roc_auc",
        "test/cart_pr_auc",
        "test/fav_brier",
        "test/purchase_log_loss",
        "yardstick/lr/test/purchase_roc_auc",
        "yardstick/lgbm/test/purchase_roc_auc",
        "test/category_hit_rate_at_5",
        "test/category_ndcg_at_5",
        "val/category_ndcg_at_5",
        "yardstick/lgbm/test/category_hit_rate_at_5",
        "yardstick/lgbm/test/category_ndcg_at_5",
        "yardstick/lgbm/test/category_pair_roc_auc",
        "yardstick/lr/test/category_ndcg_at_5",
        "val_kept/purchase_pr_auc",
        "train/samples_per_s",
        "train/lr",
        BEST_EPOCH,
        "data/test_purchase_positive_rate",
        "data/val_purchase_positive_rate",
        "data/test_category_users",
    ):
        assert key in run.data.metrics, key
    assert run.data.metrics["test/purchase_roc_auc"] == pytest.approx(result.test_metrics["purchase_roc_auc"])
    # Positive weighting inflates the raw probabilities; the packaged Platt calibration (fitted on validation)
    # brings them back without touching the ranking.
    m = run.data.metrics
    assert run.data.tags["calibration"] == "platt"
    assert m["test/purchase_ece"] < m["test_uncalibrated/purchase_ece"]
    assert m["test/purchase_log_loss"] < m["test_uncalibrated/purchase_log_loss"]
    # Every metric sits in a group (the MLflow UI's chart sections: the key up to its last "/").
    sections = {k.rsplit("/", 1)[0] for k in run.data.metrics if "/" in k}
    assert set(run.data.metrics) == {k for k in run.data.metrics if "/" in k}
    assert sections == {
        "train",
        "val",
        "val_kept",
        "test",
        "test_uncalibrated",
        "test_new_users",
        "test_returning_users",
        "data",
        *(f"yardstick/{y}/{s}" for y in ("lr", "lgbm") for s in ("test", "test_new_users", "test_returning_users")),
    }
    # Facts of the rows are logged once, not per evaluated model.
    assert not [
        k
        for k in run.data.metrics
        if k.endswith(("positive_rate", "_rows", "category_users")) and not k.startswith("data/")
    ]
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == cfg.mlflow.experiment and exp.artifact_location == cfg.mlflow.artifact_location
    assert exp.tags[EXPERIMENT_KIND_TAG] == CUSTOM_MODEL_DEVELOPMENT
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"training_set", "plots"} <= artifacts
    assert {"plots/loss.png", "plots/test_curves.png"} <= {
        a.path for a in client.list_artifacts(result.run_id, "plots")
    }
    logged = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=result.run_id,
                artifact_path="training_set/manifest.json",
                tracking_uri=cfg.mlflow.resolved_tracking_uri,
            )
        ).read_text()
    )
    assert logged == read_manifest(ts)
    version = client.get_model_version(cfg.mlflow.model_name, "1")
    assert version.run_id == result.run_id and version.tags["training_set_id"] == "ts_small"

    # Lineage: one metadata-only dataset input per split, with its cutoff range and row count.
    manifest = read_manifest(ts)
    inputs = {{t.key: t.value for t in i.tags}["mlflow.data.context"]: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation", "test"}
    for context, split in (("train", "train"), ("validation", "val"), ("test", "test")):
        ds, tags = inputs[context].dataset, {t.key: t.value for t in inputs[context].tags}
        assert ds.name == "ts_small" and json.loads(ds.source)["uri"] == str(ts / split)
        assert tags["cutoff_first"] == min(manifest["cutoffs"][split])
        assert tags["cutoff_last"] == max(manifest["cutoffs"][split])
        assert tags["rows"] == str(manifest["rows"][split]) == str(json.loads(ds.profile)["rows"])
    # The GX validation result of this training set and its Data Docs path are on the run.
    assert run.data.tags["training_set_validation"] == "passed"
    logged = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=result.run_id,
                artifact_path="training_set/validation_result.json",
                tracking_uri=cfg.mlflow.resolved_tracking_uri,
            )
        ).read_text()
    )
    assert logged["success"] and logged["key"] == "ts_small" and logged["summary"]["n_expectations"] > 0
    assert run.data.tags["training_set_data_docs"].endswith("index.html")
    # New/returning breakdown for the candidate and both yardsticks; the groups partition the test rows.
    m = run.data.metrics
    assert m["data/test_new_users_rows"] > 0 and m["data/test_returning_users_rows"] > 0
    assert m["data/test_new_users_rows"] + m["data/test_returning_users_rows"] == manifest["rows"]["test"]
    for yardstick in (None, "lr", "lgbm"):
        for group in ("new_users", "returning_users"):
            key = metric_name("test", "purchase_roc_auc", user_group=group, yardstick=yardstick)
            assert 0.0 <= m[key] <= 1.0, key
    # No checkpoint is left behind by a finished training.
    assert not list((cfg.paths.runs_dir / "checkpoints").glob("*/checkpoint.pt"))


def test_validation_gate(trained, tmp_path, capsys):
    cfg, ts, _ = trained
    manifest = read_manifest(ts)
    assert require_validation(cfg, ts, manifest)["success"]
    # Rewritten after its validation: the stored result no longer covers these files.
    part = sorted((ts / "test").glob("*.parquet"))[0]
    st = part.stat()
    os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    try:
        with pytest.raises(UnvalidatedTrainingSetError, match="changed since its validation"):
            require_validation(cfg, ts, manifest)
    finally:
        os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns))
    # Never validated: launch refuses before starting torchrun, naming the fix.
    other = write_training_set(tmp_path / "unvalidated", n_users=30, seed=2)
    no_result = r"'unvalidated' has no validation result .*spark_jobs.validate"
    with pytest.raises(UnvalidatedTrainingSetError, match=no_result):
        launch(_cfg(tmp_path / "var"), other, epochs=1, nproc=2)
    # The CLI reports it as bad data: exit 65 and the same one-line reason, so Airflow does not retry it.
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(_cfg(tmp_path / "var").model_dump(mode="json")))
    argv = ["--training-set", str(other), "--launch", "--epochs", "1", "--config", str(config)]
    assert run_cli(lambda: main(argv)) == EXIT_DATA_ERROR
    assert re.search(no_result, capsys.readouterr().err)


def test_crash_resumes_at_the_next_epoch(trained, tmp_path, capsys):
    """Rank 0 is SIGKILLed after epoch 1; the relaunch resumes at epoch 2 and ends where the uninterrupted run
    (the ``trained`` fixture: same set, settings, seed and process count) ended: losses within 1e-6."""
    cfg0, ts, uninterrupted = trained
    # Yardsticks do not affect the network's training; leaving them out keeps this test short.
    cfg = _cfg(tmp_path / "var", baselines=False)
    with pytest.raises(TrainingError, match="exited with status"):
        launch(cfg, ts, model_type="lstm", epochs=2, nproc=2, allow_unvalidated=True, fault_after_epoch=1)
    assert "fault injection: killing rank 0 after epoch 1" in capsys.readouterr().out
    (ckpt,) = (cfg.paths.runs_dir / "checkpoints").glob("*/checkpoint.pt")

    result = launch(cfg, ts, model_type="lstm", epochs=2, nproc=2, allow_unvalidated=True, fault_after_epoch=1)
    out = capsys.readouterr().out
    assert re.search(r"resumed from checkpoint .* after epoch 1", out)
    assert "epoch 1/2" not in out and "epoch 2/2" in out
    assert not ckpt.exists()

    client0 = MlflowClient(tracking_uri=cfg0.mlflow.resolved_tracking_uri)
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed_after_epoch"] == "1"
    assert run.data.tags["training_set_validation"] == "not checked"
    resumed = [(m.step, m.value) for m in client.get_metric_history(result.run_id, TRAIN_LOSS)]
    expected = [(m.step, m.value) for m in client0.get_metric_history(uninterrupted.run_id, TRAIN_LOSS)]
    assert [s for s, _ in resumed] == [1, 2]
    np.testing.assert_allclose([v for _, v in resumed], [v for _, v in expected], rtol=0, atol=1e-6)
    for key in ("purchase_roc_auc", "purchase_log_loss", "cart_pr_auc"):
        assert result.test_metrics[key] == pytest.approx(uninterrupted.test_metrics[key], abs=1e-6)


def _node(rank: int, port: int, ts: Path, out: Path, conf: Path, *extra: str) -> list[str]:
    """The README's multi-node command for node ``rank`` of two, one process each, on loopback."""
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"two-nodes-{port}"]
    return [
        *[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank)],
        *["--nproc-per-node", "1", *rendezvous, "--max-restarts", "0"],
        *["-m", "tasks.train", "--training-set", str(ts), "--output", str(out), "--config", str(conf)],
        *["--model-type", "lstm", "--epochs", "2", "--allow-unvalidated", *extra],
    ]


def _two_nodes(cfg, ts: Path, work: Path, *extra: str) -> tuple[list[int], str, Path]:
    """Both nodes' exit codes, their output, and the result file rank 0 writes."""
    from tasks.airflow_env import free_port

    conf = work / "pipeline.yaml"
    conf.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out, port = work / "result.json", free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PIPELINE_CONFIG", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    logs = [work / f"node{r}-{port}.log" for r in (0, 1)]
    with contextlib.ExitStack() as stack:
        nodes = [
            subprocess.Popen(
                _node(r, port, ts, out, conf, *extra),
                cwd=REPO_ROOT,
                env=env,
                stdout=stack.enter_context(open(log, "w")),
                stderr=subprocess.STDOUT,
            )
            for r, log in zip((0, 1), logs, strict=True)
        ]
        codes = [node.wait(timeout=600) for node in nodes]
    return codes, "\n".join(log.read_text() for log in logs), out


def _same_training(client, run_id: str, client0, run_id0: str) -> None:
    two = [(m.step, m.value) for m in client.get_metric_history(run_id, TRAIN_LOSS)]
    one = [(m.step, m.value) for m in client0.get_metric_history(run_id0, TRAIN_LOSS)]
    assert [s for s, _ in two] == [s for s, _ in one] == [1, 2]
    np.testing.assert_allclose([v for _, v in two], [v for _, v in one], rtol=0, atol=1e-5)
    auc = metric_name("test", "purchase_roc_auc")
    assert client.get_run(run_id).data.metrics[auc] == pytest.approx(
        client0.get_run(run_id0).data.metrics[auc], abs=1e-5
    )


def test_two_nodes_train_like_one_node_with_two_processes(trained, tmp_path):
    """Two torchrun agents (c10d rendezvous on 127.0.0.1, one process each) train the ``trained`` fixture's
    model (same set, settings, seed, world size 2) to its losses and test metrics."""
    cfg0, ts, one_node = trained
    cfg = _cfg(tmp_path / "var", baselines=False)
    codes, output, out = _two_nodes(cfg, ts, tmp_path)
    assert codes == [0, 0], output[-6000:]
    run_id = json.loads(out.read_text())["run_id"]
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
    _same_training(client, run_id, MlflowClient(tracking_uri=cfg0.mlflow.resolved_tracking_uri), one_node.run_id)


def test_two_nodes_resume_after_a_crash(trained, tmp_path):
    """Rank 0 dies after epoch 1 on a two-node training; both agents stop; relaunched, the two nodes resume from
    the checkpoint (a directory both reach, as a shared volume would be) and end where one node ends."""
    cfg0, ts, one_node = trained
    cfg = _cfg(tmp_path / "var", baselines=False)
    codes, output, _ = _two_nodes(cfg, ts, tmp_path, "--fault-after-epoch", "1")
    assert 0 not in codes and "fault injection: killing rank 0 after epoch 1" in output, output[-6000:]
    codes, output, out = _two_nodes(cfg, ts, tmp_path, "--fault-after-epoch", "1")
    assert codes == [0, 0], output[-6000:]
    assert re.search(r"resumed from checkpoint .* after epoch 1", output) and "epoch 1/2" not in output
    run_id = json.loads(out.read_text())["run_id"]
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    assert client.get_run(run_id).data.tags["resumed_after_epoch"] == "1"
    _same_training(client, run_id, MlflowClient(tracking_uri=cfg0.mlflow.resolved_tracking_uri), one_node.run_id)


def test_pyfunc_contract_in_a_fresh_process(trained, tmp_path):
    cfg, ts, result = trained
    test = pd.read_parquet(ts / "test")
    # Scoring hands in arrays (Arrow conversion) or lists, extra columns, any index; add hard rows.
    inp = test.drop(columns=[c for c in test.columns if c.startswith("label_")]).copy()
    inp.index = np.arange(len(inp))[::-1] + 1000
    inp.loc[inp.index[0], "f_avg_price"] = np.nan
    cats = inp["seq_category"].tolist()
    cats[1] = np.array(["never_seen"] * len(cats[1]), dtype=object)
    inp["seq_category"] = cats
    inp.to_parquet(tmp_path / "in.parquet")
    script = textwrap.dedent(
        f"""
        import sys, mlflow, numpy as np, pandas as pd
        assert "tasks" not in sys.modules
        model = mlflow.pyfunc.load_model("{result.model_uri}")
        pdf = pd.read_parquet("{tmp_path / "in.parquet"}")
        pdf.index = np.arange(len(pdf))[::-1] + 1000
        arrays = model.predict(pdf)
        lists = pdf.copy()
        for c in {list(SEQUENCE_COLUMNS)!r}:
            lists[c] = lists[c].map(lambda v: [x.item() if hasattr(x, "item") else x for x in v])
        assert isinstance(lists["seq_hour"].iloc[0], list)
        as_lists = model.predict(lists)
        reversed_ = model.predict(pdf.iloc[::-1])
        pd.DataFrame({{"arrays_" + c: arrays[c].to_numpy() for c in arrays}}
                     | {{"lists_" + c: as_lists[c].to_numpy() for c in as_lists}}
                     | {{"rev_" + c: reversed_[c].to_numpy()[::-1] for c in reversed_}}
                     | {{"index": arrays.index.to_numpy(), "cols": [",".join(arrays.columns)] * len(arrays)}}
                     ).to_parquet("{tmp_path / "out.parquet"}")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIPELINE_CONFIG")}
    env["MLFLOW_TRACKING_URI"] = cfg.mlflow.resolved_tracking_uri
    # Run outside the repo with no PYTHONPATH: the model must bring its own code.
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out["cols"].iloc[0] == ",".join(PROBABILITY_COLUMNS)
    assert len(out) == len(test)
    assert out["index"].tolist() == inp.index.tolist()
    for c in PROBABILITY_COLUMNS:
        p = out[f"arrays_{c}"].to_numpy()
        assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()
        np.testing.assert_allclose(out[f"lists_{c}"], p, rtol=1e-6)
        np.testing.assert_allclose(out[f"rev_{c}"], p, rtol=1e-6)
    # The packaged model reproduces the test metrics training logged.
    from tasks.evaluate import evaluate_intents

    y = test[["label_purchase", "label_cart", "label_fav"]].to_numpy()
    with mlflow_store(cfg):
        clean = mlflow.pyfunc.load_model(result.model_uri).predict(test)
    assert evaluate_intents(y, clean.to_numpy())["purchase_roc_auc"] == pytest.approx(
        result.test_metrics["purchase_roc_auc"], abs=1e-3
    )
    # With candidate arrays it ranks every candidate (k = all) as training's category metrics did.
    with_cand, cand = with_candidate_arrays(ts, test)
    test["_key"] = with_cand["_key"]
    with mlflow_store(cfg):
        ranked = mlflow.pyfunc.load_model(result.model_uri).predict(with_cand, params={"top_k_categories": 100})
    assert list(ranked.columns) == [*PROBABILITY_COLUMNS, "top_categories"]
    np.testing.assert_allclose(ranked[list(PROBABILITY_COLUMNS)].to_numpy(), clean.to_numpy(), rtol=1e-6)
    label = cand.set_index(["_key", "category_id"])["label_purchase_in_category"]
    groups, labels, scores = [], [], []
    for key, top in zip(test["_key"], ranked["top_categories"], strict=True):
        for t in top if top is not None else []:
            cat, p = t.rsplit(":", 1)
            groups.append(key)
            labels.append(label[(key, cat)])
            scores.append(float(p))
    assert len(groups) == len(cand[cand["_key"].isin(test["_key"])])
    from tasks.evaluate import category_ranking_metrics

    m = category_ranking_metrics(np.array(groups), np.array(labels), np.array(scores), k=5)
    assert m["category_ndcg_at_5"] == pytest.approx(result.test_metrics["category_ndcg_at_5"], abs=0.02)


def test_launch_fails_clearly(tmp_path):
    cfg = _cfg(tmp_path / "var", baselines=False)
    with pytest.raises(TrainingError, match="no manifest.json"):
        launch(cfg, tmp_path / "missing")
    ts = write_training_set(tmp_path / "one_file", n_users=30, seed=2, files_per_split=1)
    with pytest.raises(TrainingError, match="has 1 file.*fewer than the 2 processes"):
        launch(cfg, ts, epochs=1, nproc=2, allow_unvalidated=True)
    # A failure inside the workers surfaces with the workers' own error.
    ts = write_training_set(tmp_path / "null_labels", n_users=30, seed=2)
    part = ts / "train" / "part-00001.parquet"
    pdf = pd.read_parquet(part)
    pdf["label_cart"] = pdf["label_cart"].astype("Int32")
    pdf.loc[0, "label_cart"] = pd.NA
    pdf.to_parquet(part, index=False)
    with pytest.raises(TrainingError, match=r"exited with status [1-9]: .*null labels in \['label_cart'\]"):
        launch(cfg, ts, epochs=1, nproc=2, allow_unvalidated=True)
    assert not list((cfg.paths.runs_dir).glob("*.config.yaml"))


def test_manifest_validation(tmp_path):
    ts = write_training_set(tmp_path / "ts", n_users=10, seed=0)
    manifest = json.loads((ts / "manifest.json").read_text())
    del manifest["item_buckets"]
    (ts / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TrainingError, match="lacks keys: item_buckets"):
        read_manifest(ts)
    manifest["item_buckets"] = 64
    manifest["feature_columns"] = ["user_id"]
    (ts / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TrainingError, match="feature_columns"):
        read_manifest(ts)
    manifest["feature_columns"] = list(FEATURE_COLUMNS)
    manifest["user_category"] = {"feature_columns": ["f_uc_share"], "label_column": "label_purchase"}
    (ts / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TrainingError, match="user_category.label_column"):
        read_manifest(ts)


def test_positive_weights_and_schedule(cfg):
    assert positive_weights(cfg, np.array([10, 50, 0]), 100) == (9.0, 1.0, cfg.training.max_pos_weight)
    off = cfg.model_copy(update={"training": cfg.training.model_copy(update={"positive_weighting": "none"})})
    assert positive_weights(off, np.array([10, 50, 0]), 100) == (1.0, 1.0, 1.0)
    f = lr_lambda(cfg, 100)
    assert f(0) < f(4) <= 1.0 and f(99) < 0.01


PARITY_SCRIPT = """
import json, os, sys
from pathlib import Path
import pandas as pd, torch, torch.distributed as dist
from tasks.config import DEFAULT_CONFIG, load_config
from tasks.models.base import build_model, model_config
from tasks.models.encoding import FeatureEncoder, encode_targets
from tasks.training.data import candidate_rows, read_manifest, read_texts
from tasks.training.steps import take, train_step
from tests.helpers.trainingset import FEATURE_COLUMNS, PAIR_FEATURE_COLUMNS

ts, out, global_batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
distributed = "WORLD_SIZE" in os.environ
if distributed:
    dist.init_process_group("gloo")
rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
pdf = pd.read_parquet(ts + "/train")
cand = pd.read_parquet(ts + "/user_category/train")
enc = FeatureEncoder.fit(pdf, list(FEATURE_COLUMNS), sequence_length=12, item_buckets=64)
enc = enc.with_pair_stats(FeatureEncoder.partial_tabular_stats(cand, list(PAIR_FEATURE_COLUMNS)))
texts = read_texts(load_config(DEFAULT_CONFIG, use_env=False), Path(ts), read_manifest(Path(ts)))
if texts is not None:
    enc = enc.with_texts(texts.texts, texts.vectors.shape[1], texts.encoder, texts.through)
# Users with their candidates (a different count per user): the candidate loss must keep parity too.
x = {**enc.encode(pdf), **enc.encode_candidates(candidate_rows(pdf, cand), cand, with_labels=True)}
y, w = encode_targets(pdf)
torch.manual_seed(5)
model = build_model("lstm", model_config("lstm", vocab_sizes=enc.vocab_sizes, n_tabular=len(FEATURE_COLUMNS),
                    sequence_length=12, embedding_dim=16, hidden_dim=32, dropout=0.0, pos_weight=(3.0, 2.0, 2.0),
                    n_pair_tabular=len(PAIR_FEATURE_COLUMNS), category_pos_weight=2.5, **enc.text_sizes))
if texts is not None:
    model.embed.set_text_vectors(torch.from_numpy(texts.vectors))
ddp = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
opt = torch.optim.AdamW(model.parameters(), lr=0.01)
local = global_batch // world
losses = []
for step in range(8):
    # Global batch `step`; this rank takes its contiguous share of it.
    idx = torch.arange(step * global_batch + rank * local, step * global_batch + (rank + 1) * local)
    loss = torch.tensor([train_step(ddp, model, opt, take(x, idx), y[idx], w[idx], grad_clip_norm=0.5)])
    if distributed:
        dist.all_reduce(loss)
    losses.append(loss.item() / world)
if rank == 0:
    json.dump({"losses": losses, "params": [p.detach().flatten().tolist() for p in model.parameters()]},
              open(out, "w"))
"""


@pytest.mark.parametrize("text_dim", [0, 16], ids=["no-text", "text"])
def test_ddp_two_processes_match_one_process(tmp_path, text_dim):
    """Same seed and global batches: 2 gloo processes reach the 1-process losses within 1e-5 (params 1e-4), with
    each event's text vector and each candidate's category text read by the model or without text."""
    ts = write_training_set(tmp_path / "ts", n_users=200, seed=4, text_dim=text_dim)
    script = tmp_path / "parity.py"
    script.write_text(PARITY_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    runs = {
        "one": [sys.executable, str(script)],
        "two": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)],
    }
    results = {}
    for name, cmd in runs.items():
        out = tmp_path / f"{name}.json"
        proc = subprocess.run([*cmd, str(ts), str(out), "64"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        results[name] = json.loads(out.read_text())
    one, two = results["one"], results["two"]
    assert one["losses"][0] != one["losses"][-1]
    np.testing.assert_allclose(two["losses"], one["losses"], atol=1e-5, rtol=0)
    for a, b in zip(one["params"], two["params"], strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)


def test_new_user_definition_and_group_metrics():
    from tasks.evaluate import evaluate_intents, evaluate_user_groups, new_user_mask

    cols = ["f_view_7d", "f_view_30d", "f_cart_7d", "f_cart_30d", "f_purchase_30d", "f_trend_1d_vs_7d"]
    frame = pd.DataFrame(
        {
            # Rows 0 and 3 did everything in the last 7 days (a missing count reads as 0); row 1 viewed
            # earlier, row 2 added to cart earlier; a purchase-only window (no 7d twin) does not count.
            "f_view_7d": [2.0, 1.0, 0.0, np.nan],
            "f_view_30d": [2.0, 3.0, 0.0, 0.0],
            "f_cart_7d": [1.0, 0.0, 0.0, 1.0],
            "f_cart_30d": [1.0, 0.0, 4.0, 1.0],
            "f_purchase_30d": [5.0, 0.0, 0.0, 0.0],
            "f_trend_1d_vs_7d": [0.1, 0.2, 0.3, 0.4],
        }
    )
    new = new_user_mask(frame, cols, 7)
    assert new.tolist() == [True, False, False, True]
    assert new_user_mask(frame, ["f_purchase_30d", "f_trend_1d_vs_7d"], 7) is None
    assert new_user_mask(frame, cols, 3) is None

    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1]])
    p = np.array([[0.9, 0.1, 0.2], [0.2, 0.7, 0.1], [0.3, 0.8, 0.9], [0.4, 0.2, 0.6]])
    groups = evaluate_user_groups(y, p, new)
    assert groups["new_users_rows"] == 2 and groups["returning_users_rows"] == 2
    assert groups["new_users_purchase_roc_auc"] == 1.0 and groups["returning_users_purchase_roc_auc"] == 1.0
    new_only = evaluate_intents(y[[0, 3]], p[[0, 3]])
    assert groups["new_users_purchase_log_loss"] == pytest.approx(new_only["purchase_log_loss"])
    # A group without rows reports its zero count and no metric; a mask of the wrong length is an error.
    only_new = evaluate_user_groups(y, p, np.ones(4, dtype=bool))
    assert only_new["returning_users_rows"] == 0 and "returning_users_purchase_roc_auc" not in only_new
    assert evaluate_user_groups(y, p, None) == {}
    with pytest.raises(ValueError, match="mask has 3 rows"):
        evaluate_user_groups(y, p, new[:3])


def test_new_user_days_must_be_a_shorter_feature_window():
    from tasks.config import DEFAULT_CONFIG, ConfigError, load_config

    for days in (5, 30):
        with pytest.raises(ConfigError, match=r"training.new_user_days=\d+ must be one of features.windows_days"):
            load_config(DEFAULT_CONFIG, overrides={"training": {"new_user_days": days}}, use_env=False)


def test_checkpoint_identity_and_atomic_save(tmp_path):
    from tasks import checkpoint

    key = checkpoint.training_key({"id": "a", "rows": {"train": 3}}, "lstm", 2, {"seed": 1}, 2)
    assert key == checkpoint.training_key({"rows": {"train": 3}, "id": "a"}, "lstm", 2, {"seed": 1}, 2)
    for other in (
        checkpoint.training_key({"id": "a", "rows": {"train": 4}}, "lstm", 2, {"seed": 1}, 2),
        checkpoint.training_key({"id": "a", "rows": {"train": 3}}, "bert", 2, {"seed": 1}, 2),
        checkpoint.training_key({"id": "a", "rows": {"train": 3}}, "lstm", 3, {"seed": 1}, 2),
        checkpoint.training_key({"id": "a", "rows": {"train": 3}}, "lstm", 2, {"seed": 2}, 2),
        checkpoint.training_key({"id": "a", "rows": {"train": 3}}, "lstm", 2, {"seed": 1}, 1),
    ):
        assert other != key
    folder = checkpoint.checkpoint_dir(tmp_path, "a", "lstm", key)
    assert checkpoint.load(folder) is None
    checkpoint.save(folder, {"epoch": 1, "rng": [checkpoint.rng_state()]})
    checkpoint.save(folder, {"epoch": 2, "rng": [checkpoint.rng_state()]})
    assert checkpoint.load(folder)["epoch"] == 2
    assert [p.name for p in folder.iterdir()] == [checkpoint.CHECKPOINT_FILE]
    checkpoint.remove(folder)
    assert checkpoint.load(folder) is None


def test_optuna_search_trains_the_best_trial(tmp_path):
    """Two 1-epoch trials as nested runs, then the best trial's settings train the one registered version."""
    ts = write_training_set(tmp_path / "ts", n_users=60, seed=3)
    search = {"enabled": True, "n_trials": 2, "trial_epochs": 1, "hidden_dim": [16, 32], "embedding_dim": [8]}
    cfg = _cfg(tmp_path / "var", baselines=False, search=search)
    result = launch(cfg, ts, model_type="lstm", epochs=1, nproc=1, allow_unvalidated=True)

    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    final = client.get_run(result.run_id)
    parent = client.get_run(final.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["search"] == "optuna" and parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    trials = [r for r in children if r.info.run_id != result.run_id]
    assert len(trials) == 2 and all(not any(k.startswith("test") for k in r.data.metrics) for r in trials)
    best = max(trials, key=lambda r: r.data.metrics[BEST_VAL_SCORE])
    assert parent.data.tags["best_trial_run_id"] == best.info.run_id
    assert parent.data.metrics[BEST_VAL_SCORE] == pytest.approx(best.data.metrics[BEST_VAL_SCORE])
    for key in ("learning_rate", "dropout", "hidden_dim", "embedding_dim"):
        assert final.data.params[f"training.{key}"] == best.data.params[f"training.{key}"]
        assert parent.data.params[f"best.{key}"] == best.data.params[f"training.{key}"]
    assert [str(v.version) for v in client.search_model_versions(f"name='{cfg.mlflow.model_name}'")] == ["1"]
    assert "test/purchase_roc_auc" in final.data.metrics
