"""bench train_throughput: samples/s of LSTM and BERT under torchrun with 1 and 2 processes and with
2 intra-op threads (issue 5)."""

from __future__ import annotations

import argparse
import os
import statistics
from functools import partial

from bench.harness import env, r, run_metrics, timed, workdir
from tasks.evaluate import TRAIN_SAMPLES_PER_S, metric_name
from tests.helpers.config import isolated_config


def run(args: argparse.Namespace) -> dict:
    from tasks.training.launcher import launch
    from tests.helpers.trainingset import write_training_set

    rows_per_cutoff = 200 if args.quick else max(100, int(1500 * args.scale))
    epochs = 2 if args.quick else 3
    runs = [("lstm", 1, 1), ("lstm", 2, 1), ("lstm", 1, 2), ("bert", 1, 1), ("bert", 2, 1), ("bert", 1, 2)]
    results = []
    with workdir("train") as work:
        cfg = isolated_config(
            work / "var",
            training={"baselines": False, "patience": 0, "epochs": epochs},
        )
        ts = write_training_set(
            work / "ts",
            n_users=rows_per_cutoff,
            seed=1,
            sequence_length=cfg.features.sequence_length,
            item_buckets=cfg.features.item_buckets,
            n_categories=120,
            n_train_cutoffs=3,
            files_per_split=4,
        )
        n_train = 3 * rows_per_cutoff
        for model_type, nproc, threads in runs:
            with env(OMP_NUM_THREADS=str(threads)):
                # Benchmark sets are not run through the GX gate (it is benchmarked on its own).
                res, wall = timed(
                    partial(launch, cfg, ts, model_type=model_type, epochs=epochs, nproc=nproc, allow_unvalidated=True)
                )
            metrics, sps = run_metrics(cfg, res.run_id)
            steady = sps[1:] or sps  # epoch 1 includes one-off warm-up (allocator, autograd graph caches)
            results.append(
                {
                    "model": model_type,
                    "processes": nproc,
                    "threads_per_process": threads,
                    "samples_per_s": statistics.mean(steady),
                    "per_epoch": sps,
                    "wall_s": wall,
                    "test_purchase_roc_auc": metrics.get(metric_name("test", "purchase_roc_auc")),
                }
            )
    base = {
        m: next(
            x["samples_per_s"]
            for x in results
            if x["model"] == m and x["processes"] == 1 and x["threads_per_process"] == 1
        )
        for m in ("lstm", "bert")
    }
    table = [
        {
            "model": x["model"],
            "torchrun processes": x["processes"],
            "threads/process": x["threads_per_process"],
            "samples/s": int(x["samples_per_s"]),
            "speed-up vs 1x1": r(x["samples_per_s"] / base[x["model"]]),
            "launch wall s": r(x["wall_s"], 1),
        }
        for x in results
    ]
    cfg_t = cfg.training
    notes = [
        f"{n_train} train rows (tests.helpers.trainingset, sequence length {cfg.features.sequence_length}, "
        f"{cfg.features.item_buckets} item buckets), global batch {cfg_t.batch_size}, hidden {cfg_t.hidden_dim}, "
        f"embedding {cfg_t.embedding_dim}; gloo on CPU, {os.cpu_count()} cores.",
        f"samples/s = the run's per-epoch MLflow metric {TRAIN_SAMPLES_PER_S} (train loop only), "
        f"mean of epochs 2..{epochs}; "
        "launch wall s includes torchrun start, data loading, evaluation and MLflow model logging.",
        f"2 processes vs 1: LSTM x{r(_speedup(results, 'lstm', 2, 1))}, BERT x{r(_speedup(results, 'bert', 2, 1))}; "
        f"1 process with 2 intra-op threads: LSTM x{r(_speedup(results, 'lstm', 1, 2))}, "
        f"BERT x{r(_speedup(results, 'bert', 1, 2))}.",
    ]
    return {
        "description": "Training throughput of the intent models under torchrun (gloo, CPU), 1 vs 2 processes "
        "(issue 5).",
        "table": table,
        "notes": notes,
        "runs": results,
        "train_rows": n_train,
        "epochs": epochs,
    }


def _speedup(results: list[dict], model: str, nproc: int, threads: int) -> float:
    pick = {(x["model"], x["processes"], x["threads_per_process"]): x["samples_per_s"] for x in results}
    return pick[(model, nproc, threads)] / pick[(model, 1, 1)]
