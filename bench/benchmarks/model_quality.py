"""bench model_quality: test ROC-AUC / PR-AUC and category HitRate@k / NDCG@k of LR, LightGBM, LSTM and
BERT, synthetic and Taobao, and on synthetic data what the sequences could add (bench.signal_study)
(issue 5)."""

from __future__ import annotations

import argparse
import datetime as dt
from functools import partial
from pathlib import Path
from typing import Any

from bench.data import build_synthetic_training_set
from bench.harness import r, run_metrics, spark_session, timed, workdir
from bench.signal_study import SIGNAL_TITLE, sequence_signal, signal_notes
from tasks.config import REPO_ROOT, PipelineConfig
from tasks.evaluate import BEST_EPOCH, UNCALIBRATED, metric_name
from tests.helpers.config import isolated_config

TAOBAO_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "taobao_userbehavior_sample.csv"


def quality_rows(cfg: PipelineConfig, ts_dir: Path, dataset: str, epochs: int | None) -> tuple[list[dict], dict]:
    """Train every model family (LSTM, BERT, LR, LightGBM) on one training set; rows of their test metrics and
    of the LR and LightGBM yardsticks that each training logs.

    User level: ROC-AUC / PR-AUC of the purchase head. Category level: HitRate@k / NDCG@k of each
    user's candidate categories (k = training.category_eval_k), for each family's category ranking and the
    yardsticks' pair models on the f_uc_* features.
    """
    from tasks.training.launcher import launch

    k = cfg.training.category_eval_k
    hit, ndcg = f"category_hit_rate_at_{k}", f"category_ndcg_at_{k}"

    def metric_row(model: str, m: dict[str, float], yardstick: str | None) -> dict:
        def name(metric: str) -> str:
            return metric_name("test", metric, yardstick=yardstick)

        uncal = f"{UNCALIBRATED}/purchase_ece"

        return {
            "dataset": dataset,
            "model": model,
            "test ROC-AUC": r(m[name("purchase_roc_auc")], 4),
            "test PR-AUC": r(m[name("purchase_pr_auc")], 4),
            f"category HitRate@{k}": r(m[name(hit)], 4) if name(hit) in m else "",
            f"category NDCG@{k}": r(m[name(ndcg)], 4) if name(ndcg) in m else "",
            # Expected calibration error of p_purchase (10 equal-mass bins) after and before calibration.
            "test ECE": r(m[name("purchase_ece")], 4) if name("purchase_ece") in m else "",
            "ECE uncalibrated": r(m[uncal], 4) if not yardstick and uncal in m else "",
            # Sum of p_purchase over the test day / its buyers: 1.0 when the scores count the buyers right.
            "sum p / buyers": r(m[ratio], 3) if (ratio := name("purchase_predicted_over_observed")) in m else "",
        }

    rows, raw = [], {}
    baselines = None
    for model_type in ("lstm", "bert", "lr", "lightgbm"):
        res, wall = timed(partial(launch, cfg, ts_dir, model_type=model_type, epochs=epochs, allow_unvalidated=True))
        metrics, _ = run_metrics(cfg, res.run_id)
        raw[model_type] = {"run_id": res.run_id, "model_uri": res.model_uri, "metrics": metrics, "wall_s": wall}
        rows.append(
            {
                **metric_row(model_type, metrics, None),
                "best epoch": int(metrics[BEST_EPOCH]) if BEST_EPOCH in metrics else "",
                "train wall s": r(wall, 0),
            }
        )
        if baselines is None:
            baselines = metrics
    yardsticks = (
        ("lr", "yardstick: logistic regression (f_*; categories: f_uc_*)"),
        ("lgbm", "yardstick: LightGBM (f_*; categories: f_uc_*)"),
    )
    for name, label in yardsticks:
        rows.insert(
            0,
            {
                **metric_row(label, baselines, name),
                "best epoch": "",
                "train wall s": "",
            },
        )
    return rows, raw


def taobao_training_set(cfg: PipelineConfig, spark) -> Any:
    from spark_jobs import training_set
    from spark_jobs.clean_events import run_import
    from tasks.land import land_file

    raw_day = dt.date(2017, 12, 1)
    land_file(cfg, "taobao", TAOBAO_SAMPLE, raw_day)
    rep = run_import(cfg, "taobao", raw_day, dt.date(2017, 11, 25), raw_day)
    print(f"  taobao import: {rep.n_events} events, quarantined {rep.quarantined}", flush=True)
    return training_set.build(cfg, last_cutoff=raw_day, spark=spark)


def run(args: argparse.Namespace) -> dict:
    n_users = 400 if args.quick else max(200, int(3000 * args.scale))
    n_days = 10 if args.quick else 14
    epochs = 1 if args.quick else None
    table, raw, manifests = [], {}, {}
    with workdir("quality") as work:
        cfg = isolated_config(work / "syn")
        spark = spark_session(cfg)
        info, n_events = build_synthetic_training_set(cfg, spark, n_users, n_days)
        manifests["synthetic"] = info.manifest
        rows, raw["synthetic"] = quality_rows(cfg, info.path, f"synthetic {n_users}u x {n_days}d", epochs)
        table += rows
        gen = cfg.generator.model_copy(update={"n_users": n_users, "n_days": n_days})
        # The ablations shuffle and scramble sequences: only the sequence families read them.
        seq_models = {k: v for k, v in raw["synthetic"].items() if k in ("lstm", "bert")}
        signal, signal_s = timed(lambda: sequence_signal(cfg, info.path, info.manifest, gen, seq_models))
        print(f"  sequence signal analysis ({signal_s:.0f}s)", flush=True)
        if TAOBAO_SAMPLE.is_file():
            tcfg = isolated_config(
                work / "taobao",
                pipeline={"timezone": "Asia/Shanghai", "source": "taobao"},
                training_set={"n_train_cutoffs": 4, "n_val_cutoffs": 1, "n_test_cutoffs": 1},
            )
            tinfo = taobao_training_set(tcfg, spark)
            manifests["taobao"] = tinfo.manifest
            rows, raw["taobao"] = quality_rows(tcfg, tinfo.path, "taobao sample (814 users)", epochs)
            table += rows
    notes = []
    for name, m in manifests.items():
        notes.append(
            f"{name}: cutoffs train {m['cutoffs']['train'][0]}..{m['cutoffs']['train'][-1]}, val "
            f"{m['cutoffs']['val']}, test {m['cutoffs']['test']}; rows {m['rows']}; test purchase rate "
            f"{m['positive_rate']['test']['label_purchase']:.3f}."
        )
    for ds_name in raw:
        rows = [x for x in table if x["dataset"].startswith(ds_name)]
        best = max(rows, key=lambda x: x["test ROC-AUC"])
        notes.append(f"{ds_name}: best test ROC-AUC {best['test ROC-AUC']} by {best['model']}.")
    if not TAOBAO_SAMPLE.is_file():
        notes.append(f"Taobao sample not found at {TAOBAO_SAMPLE}: only synthetic data measured.")
    notes.append(
        "ROC-AUC / PR-AUC of the purchase head on the held-out test cutoff. The yardstick rows are the fixed "
        "LR and LightGBM fits every training logs on the same splits (yardstick/*/test/*); lstm, bert, lr and "
        "lightgbm are the model families as tasks.training.launcher.launch trains them: lstm and bert under "
        f"torchrun ({cfg.training.nproc_per_node} processes, {epochs or cfg.training.epochs} epochs max, early "
        "stopping on the validation score of both heads (training.early_stopping), best epoch kept), lr and "
        "lightgbm in one process (lightgbm stops adding trees on the validation log loss); every family's "
        "probabilities calibrated on validation (training.calibration)."
    )
    notes += signal_notes(signal, manifests["synthetic"]["cutoffs"]["test"])
    return {
        "description": "Test ROC-AUC, PR-AUC and calibration error (purchase head) and category HitRate@k / NDCG@k "
        "of the four model families (lstm, bert, lr, lightgbm) and the LR / LightGBM yardsticks, on synthetic data "
        "and the real Taobao sample; on synthetic data, what the sequences could add.",
        "table": table,
        "tables": [{"title": SIGNAL_TITLE, "rows": signal.pop("table")}],
        "notes": notes,
        "runs": raw,
        "sequence_signal": signal,
        "synthetic_events": n_events,
    }
