"""bench training_at_1m: one training epoch of the LSTM on 1,000,000 training rows under torchrun with a process
per core (issue 28.4), the scale at which scoring_at_1m scores: the train loop's samples/s and seconds, the whole
launch (data loading, evaluation, model logging) and the peak memory of a training process."""

from __future__ import annotations

import argparse
import os
import threading
from functools import partial

from bench.data import build_synthetic_training_set, replicate_training_split
from bench.harness import local_cores, r, run_metrics, spark_session, timed, workdir
from tasks.evaluate import TRAIN_SAMPLES_PER_S
from tests.helpers.config import isolated_config

ROWS = 1_000_000
# The family scoring_at_1m scores with; BERT's cost relative to it is train_throughput's ratio.
FAMILY = "lstm"


def _largest_training_process(stop: threading.Event, peak: list[float]) -> None:
    """Until ``stop``: every half second, the resident memory of each training process below this one
    (``tasks.train`` under torchrun); ``peak[0]`` keeps the largest, in MiB."""
    import psutil

    me = psutil.Process()
    while not stop.wait(0.5):
        for proc in me.children(recursive=True):
            try:
                if "tasks.train" in proc.cmdline():
                    peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
            except psutil.Error:
                continue


def run(args: argparse.Namespace) -> dict:
    from tasks.training.launcher import launch

    n_users, n_days = (400, 10) if args.quick else (3000, 14)
    target = 20_000 if args.quick else int(ROWS * args.scale)
    with workdir("train1m") as work:
        cfg = isolated_config(work / "var", training={"baselines": False, "patience": 0})
        info, _ = build_synthetic_training_set(cfg, spark_session(cfg), n_users, n_days)
        real_rows = int(info.manifest["rows"]["train"])
        procs = local_cores(cfg)
        n_train = replicate_training_split(info.path, "train", target, n_files=4 * procs)
        # The validation result was for the set as built; the grown set is this benchmark's own.
        stop, peak = threading.Event(), [0.0]
        watcher = threading.Thread(target=_largest_training_process, args=(stop, peak), daemon=True)
        watcher.start()
        try:
            res, wall = timed(
                partial(launch, cfg, info.path, model_type=FAMILY, epochs=1, nproc=procs, allow_unvalidated=True)
            )
        finally:
            stop.set()
            watcher.join()
        _, per_epoch = run_metrics(cfg, res.run_id)
    peak_mib = peak[0]
    sps = per_epoch[0]
    t = cfg.training
    table = [
        {
            "model": FAMILY,
            "train rows": n_train,
            "torchrun processes": procs,
            "samples/s": int(sps),
            "epoch train loop min": r(n_train / sps / 60, 1),
            "launch wall min": r(wall / 60, 1),
            "peak RSS of a training process GiB": r(peak_mib / 1024, 1),
        }
    ]
    notes = [
        f"Training set of a synthetic log ({n_users} users x {n_days} days, built by spark_jobs.training_set; "
        f"train split {real_rows:,} rows) with its train split grown to "
        f"{n_train:,} rows by copying user rows and their candidate rows under new user ids "
        f"(bench.data.replicate_training_split), in {4 * procs} files; validation and test splits as built.",
        f"tasks.training.launcher.launch: torchrun, gloo on CPU, {procs} processes x 1 thread ({os.cpu_count()} "
        f"cores), global batch {t.batch_size}, hidden {t.hidden_dim}, embedding {t.embedding_dim}, sequence length "
        f"{cfg.features.sequence_length}, one epoch.",
        f"samples/s = the epoch's MLflow metric {TRAIN_SAMPLES_PER_S} (the train loop only, every process's samples); "
        "epoch train loop = train rows / samples/s; launch wall adds torchrun start, each process reading its "
        "files and candidates, validation and test evaluation, calibration and MLflow model logging; peak RSS = the "
        "largest resident memory of one training process, sampled every 0.5 s.",
        f"A model of the default size learns on {n_train:,} rows at this speed in about "
        f"{r(n_train / sps / 60, 0):.0f} minutes per epoch on this machine; training.epochs epochs with early "
        "stopping are that many times more. GPU nodes (torchrun, NCCL, bf16) are where bigger sets train; no GPU "
        "was available to measure them.",
    ]
    return {
        "description": "One LSTM training epoch on 1M training rows under torchrun on this machine's cores, "
        "measured (issue 28.4).",
        "table": table,
        "notes": notes,
        "run": {"train_rows": n_train, "samples_per_s": sps, "launch_wall_s": wall, "peak_rss_mib": peak_mib},
    }
