"""bench feature_ablation: do the item-level intent signals of bench.item_signals (open carted / favourited
items, repeat views of one item, the last day's share on one item or category) add anything to the f_*
features, on a generated synthetic log and on the real exports of bench/backtests.yaml? (issue 25)

Each dataset goes through ``python -m tasks.backtest`` (land, clean, training set, GX gate; LR as the one
candidate), then LR and LightGBM are fitted on the training set's f_* columns with and without each signal;
test ROC-AUC / PR-AUC differences with 95% paired bootstrap intervals over users."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.benchmarks.model_quality import backtest_datasets
from bench.data import backtest
from bench.harness import r, timed, workdir
from bench.item_signals import SIGNALS, ablation
from tests.helpers.config import isolated_config


def _study(cfg, report: dict) -> list[dict]:
    layers = report["layers"]
    return ablation(
        cfg, Path(layers["training_set"]), Path(layers["events"]), report["timezone"], resamples=1000, seed=13
    )


def run(args: argparse.Namespace) -> dict:
    n_users = 400 if args.quick else max(200, int(3000 * args.scale))
    n_days = 10 if args.quick else 14
    extra = ["--candidates", "lr", "--seeds", "1", "--bootstrap", "200"]
    table, notes, verdict = [], [], {}
    with workdir("ablation") as work:
        cfg = isolated_config(work / "var")
        datasets = backtest_datasets(cfg, work, n_users, n_days, notes)
        for i, (name, dcfg, dargs) in enumerate(datasets):
            report, wall = timed(lambda dcfg=dcfg, dargs=dargs, i=i: backtest(dcfg, work, f"d{i}", dargs, extra))
            rows, study_s = timed(lambda report=report, dcfg=dcfg: _study(dcfg, report))
            print(f"  {name}: backtest {wall:.0f}s, ablation {study_s:.0f}s", flush=True)
            for row in rows:
                lo, hi = row.get("ROC-AUC diff 95%", (None, None))
                plo, phi = row.get("PR-AUC diff 95%", (None, None))
                table.append(
                    {
                        "dataset": name,
                        "learner": row["learner"],
                        "features": row["features"],
                        "test ROC-AUC": r(row["test ROC-AUC"], 4),
                        "ROC-AUC diff [95%]": f"{row['ROC-AUC diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]"
                        if lo is not None
                        else "",
                        "test PR-AUC": r(row["test PR-AUC"], 4),
                        "PR-AUC diff [95%]": f"{row['PR-AUC diff']:+.4f} [{plo:+.4f}, {phi:+.4f}]"
                        if plo is not None
                        else "",
                    }
                )
                if row["features"].startswith("+ ") and lo is not None:
                    # Helps: the ROC-AUC or PR-AUC interval above zero, and neither of them below zero.
                    helps = (lo > 0 or plo > 0) and hi >= 0 and phi >= 0
                    verdict.setdefault(row["features"][2:], []).append((name, row["learner"], helps))
    for signal in (*SIGNALS, "all four"):
        cases = verdict.get(signal, [])
        helped = sorted({f"{n} ({lrn})" for n, lrn, h in cases if h})
        every = bool(cases) and {n for n, _, h in cases if h} == {n for n, _, _ in cases}
        where = ", ".join(helped) or "none"
        notes.append(f"{signal}: {'helps on every dataset' if every else 'does not help on every dataset'} ({where}).")
    notes.append(
        "An addition helps when the 95% paired bootstrap interval of its ROC-AUC or PR-AUC difference lies above "
        "zero. Only a signal that helps on every dataset would become an f_* feature. LR and LightGBM are the "
        "project's families (tasks.training.tabular.new_tabular_model: models.lr / models.lightgbm settings, the "
        "encoder, LightGBM stopped on validation), fitted on the train split, scored on the test split."
    )
    return {
        "description": "Test ROC-AUC / PR-AUC of LR and LightGBM on the f_* features alone and with each item-level "
        "intent signal (bench.item_signals), with paired bootstrap intervals, on synthetic data and the real "
        "exports of bench/backtests.yaml.",
        "table": table,
        "notes": notes,
        "verdict": {k: [list(c) for c in v] for k, v in verdict.items()},
    }
