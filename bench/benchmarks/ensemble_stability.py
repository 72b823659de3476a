"""bench ensemble_stability: how far a retrain moves the test metrics of one sequence model, and of a 5-seed
ensemble (``training.ensemble_seeds``), on the real exports of bench/backtests.yaml (issue 25).

``python -m tasks.backtest --candidates lstm,bert --seeds 15 --ensemble-size 5``: 15 single seeds per family
and three ensembles of disjoint 5-seed groups, their ranges of test ROC-AUC (who buys), pair ROC-AUC and NDCG@k
(what they buy)."""

from __future__ import annotations

import argparse

from bench.data import backtest, real_exports
from bench.harness import r, timed, workdir
from tasks.backtest_report import STABILITY_REGROUPINGS
from tests.helpers.config import isolated_config

CANDIDATES = ("lstm", "bert")
SEEDS, SIZE = 15, 5


def run(args: argparse.Namespace) -> dict:
    seeds, size = (4, 2) if args.quick else (SEEDS, SIZE)
    extra = ["--candidates", ",".join(CANDIDATES), "--seeds", str(seeds), "--ensemble-size", str(size)]
    if args.quick:
        extra += ["--epochs", "1", "--bootstrap", "200"]
    table, notes, reports = [], [], {}
    with workdir("ensemble") as work:
        cfg = isolated_config(work / "var")
        for key, spec, path in real_exports():
            if path is None:
                notes.append(f"{key}: {spec['input']} not found: not measured.")
                continue
            report, wall = timed(
                lambda spec=spec, path=path, key=key: backtest(cfg, work, key, {**spec, "input": path}, extra)
            )
            reports[key] = {"ensemble_stability": report["ensemble_stability"], "wall_s": round(wall, 1)}
            for s in report["ensemble_stability"]:
                table.append(
                    {
                        "dataset": key,
                        "model": s["model"],
                        "test metric": s["metric"],
                        "single seeds": s["single_seeds"],
                        "single range": r(s["single_range"], 4),
                        "single sd": r(s["single_sd"], 4),
                        "ensembles": f"{s['ensemble_draws']} x {s['ensemble_size']} seeds",
                        "ensemble values": ", ".join(f"{v:.4f}" for v in s["ensemble_values"]),
                        "ensemble range": r(s["ensemble_range"], 4),
                        "ensemble / single range": r(s["range_ratio"], 2),
                        "regrouped: mean ratio": r(s["regrouped_ratio_mean"], 2),
                        "regrouped: p90 ratio": r(s["regrouped_ratio_p90"], 2),
                    }
                )
            notes.append(f"{key}: {seeds} seeds x {len(CANDIDATES)} families in {wall:.0f}s.")
    notes.append(
        "Ranges over the single seeds (training.seed, +1, ...) and over the ensembles of consecutive, disjoint "
        f"groups of {size} seeds (independent draws of a {size}-seed ensemble), on one test split. Each family's "
        "models trained by `python -m tasks.backtest` as the training DAG trains them, calibrated on validation."
    )
    notes.append(
        "Regrouped: the same seeds dealt at random into disjoint groups of the same size, "
        f"{STABILITY_REGROUPINGS} times; the mean and 90th percentile of the ratio over those groupings. Which seeds "
        "share a group is arbitrary, and the range of three ensembles is a noisy statistic: were each seed's metric "
        "an independent normal draw and an ensemble's metric the mean of its seeds', the ratio for 15 seeds in "
        "three groups of 5 would average 0.22 and exceed 1/3 in about one case in six (simulated)."
    )
    return {
        "description": f"Test-metric range of single LSTM / BERT seeds against {size}-seed ensembles (disjoint seed "
        "groups) on the real exports of bench/backtests.yaml: how far a retrain moves the model by seed alone.",
        "table": table,
        "notes": notes,
        "backtests": reports,
    }
