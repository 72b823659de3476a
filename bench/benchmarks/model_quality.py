"""bench model_quality: every model family against the yardsticks through ``python -m tasks.backtest``, on a
generated synthetic log and on the real exports of bench/backtests.yaml; on synthetic data also what the
sequences could add (bench.signal_study) (issues 5, 25)."""

from __future__ import annotations

import argparse
import datetime as dt
import math
from pathlib import Path
from typing import Any

from bench.data import backtest, real_exports
from bench.harness import r, timed, workdir
from bench.signal_study import SIGNAL_TITLE, sequence_signal, signal_notes
from tasks.backtest import parse_range, plan_backtest, work_config
from tasks.config import PipelineConfig, with_overrides
from tasks.training.data import read_manifest
from tests.helpers.config import isolated_config

# Families every backtest trains, and seeds per family (the spread over seeds and the seed ensembles).
CANDIDATES = ("lr", "lightgbm", "lstm", "bert")
SEQUENCE = ("lstm", "bert")  # the families that read event sequences (and text, and a pretrained encoder)
SEEDS = 3
YARDSTICKS = ("heuristic", "lr", "lightgbm")


def report_family(label: str) -> str:
    """The model of a report label ("bert-pretrained (mean of 3 seeds)" -> "bert-pretrained")."""
    return label.split(" ", 1)[0]


def synthetic_args(cfg: PipelineConfig, export: Path, n_users: int, n_days: int) -> dict[str, Any]:
    """Generate the log into ``export`` (dt=<day> folders); its latest labelled day is the test cutoff, the day
    before validation, training.set's n_train_cutoffs before that."""
    from tasks.sources.synthetic import generate

    gen = cfg.generator.model_copy(update={"n_users": n_users, "n_days": n_days})
    report = generate(gen, export, cfg.pipeline.timezone)
    print(f"  synthetic log: {report.n_events} events, {n_users} users x {n_days} days", flush=True)
    last = gen.start + dt.timedelta(days=n_days - 1)
    n_train = cfg.training_set.n_train_cutoffs
    first = last - dt.timedelta(days=n_train + 1)
    train_last = last - dt.timedelta(days=2)
    return {
        "source": "synthetic",
        "input": export,
        "train": f"{first}:{train_last}",
        "val": str(last - dt.timedelta(days=1)),
        "test": str(last),
    }


def backtest_datasets(cfg: PipelineConfig, work: Path, n_users: int, n_days: int, notes: list[str]) -> list[tuple]:
    """(name, config, ``tasks.backtest`` arguments) of a synthetic log generated into ``work`` and of each real
    export of bench/backtests.yaml that is present; an absent one gets a line in ``notes``."""
    syn = with_overrides(cfg, {"generator": {"n_users": n_users, "n_days": n_days}})
    datasets = [(f"synthetic {n_users}u x {n_days}d", syn, synthetic_args(syn, work / "syn-export", n_users, n_days))]
    for key, spec, path in real_exports():
        if path is None:
            notes.append(f"{key}: {spec['input']} not found: not measured.")
        else:
            datasets.append((key, cfg, {**spec, "input": path}))
    return datasets


def quality_rows(dataset: str, report: dict) -> list[dict]:
    """One row per family (its seed ensemble) and the heuristic, with 95% bootstrap intervals, plus the seeds'
    spread of ROC-AUC."""
    k = report["k"]
    spread = {s["model"]: s for s in report["seed_spread"] if s["metric"] == "roc_auc"}
    selected = report["selection"]["model"]

    def cell(m: dict, iv: dict, name: str, digits: int = 4) -> str | float:
        v = m.get(name)
        if v is None or not math.isfinite(v):
            return ""
        lo_hi = iv.get(name)
        return f"{v:.{digits}f} [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi and None not in lo_hi else r(v, digits)

    rows = []
    for row in report["models"]:
        if not row["headline"]:
            continue
        m, iv = row["metrics"], report["intervals"].get(row["label"], {})
        s = spread.get(row["model"])
        rows.append(
            {
                "dataset": dataset,
                "model": row["label"] + (" (selected on validation)" if row["model"] == selected else ""),
                "test ROC-AUC": cell(m, iv, "roc_auc"),
                "test PR-AUC": cell(m, iv, "pr_auc"),
                "test ECE": cell(m, iv, "ece"),
                "ECE uncalibrated": cell(m, iv, "ece_uncalibrated"),
                "sum p / buyers": cell(m, {}, "predicted_over_observed", 3),
                f"NDCG@{k}": cell(m, iv, "ndcg"),
                "pair ROC-AUC": cell(m, iv, "pair_roc_auc"),
                **(
                    {f"HitRate@{k} unseen": cell(m, iv, "hit_rate_unseen"), "top 1 unseen": cell(m, iv, "top1_unseen")}
                    if m.get("unseen_buyer_days")
                    else {}
                ),
                "ROC-AUC of single seeds": f"{s['min']:.4f}..{s['max']:.4f} (sd {s['sd']:.4f})" if s else "",
            }
        )
    return rows


def comparison_rows(dataset: str, report: dict) -> list[dict]:
    return [
        {
            "dataset": dataset,
            "model": c["model"],
            "metric": c["metric"],
            "best yardstick": c["reference"],
            "difference": f"{c['difference']:+.4f}",
            "95% interval": f"[{c['low']:+.4f}, {c['high']:+.4f}]",
        }
        for c in report["bootstrap"]["comparisons"]
    ]


def run(args: argparse.Namespace) -> dict:
    n_users = 400 if args.quick else max(200, int(3000 * args.scale))
    n_days = 10 if args.quick else 14
    seeds = 1 if args.quick else SEEDS
    extra = ["--candidates", ",".join(CANDIDATES), "--seeds", str(seeds)]
    if args.quick:
        extra += ["--epochs", "1", "--bootstrap", "200"]
    table, comparisons, reports, notes = [], [], {}, []
    with workdir("quality") as work:
        cfg = isolated_config(work / "var")
        syn = with_overrides(cfg, {"generator": {"n_users": n_users, "n_days": n_days}})
        syn_args = synthetic_args(syn, work / "synthetic-export", n_users, n_days)
        (report, wall) = timed(lambda: backtest(syn, work, "synthetic", syn_args, extra))
        name = f"synthetic {n_users}u x {n_days}d"
        reports[name] = {**report, "wall_s": round(wall, 1)}

        plan = plan_backtest(*(parse_range(syn_args[s]) for s in ("train", "val", "test")), syn.features.horizon_days)
        wcfg = work_config(
            syn,
            work / "synthetic",
            plan,
            source="synthetic",
            timezone=report["timezone"],
            horizon_days=report["horizon_days"],
        )
        ts_dir = Path(report["layers"]["training_set"])
        manifest = read_manifest(ts_dir)
        first_seed = min(report["seeds"])
        seq_models = {
            t["model_type"]: {"model_uri": f"runs:/{t['run_id']}/model"}
            for t in report["training_runs"]
            if t["model_type"] in ("lstm", "bert") and t["seed"] == first_seed
        }
        signal, signal_s = timed(lambda: sequence_signal(wcfg, ts_dir, manifest, syn.generator, seq_models))
        print(f"  sequence signal analysis ({signal_s:.0f}s)", flush=True)

        for key, spec, path in real_exports():
            if path is None:
                notes.append(f"{key}: {spec['input']} not found: not measured.")
                continue
            (report, wall) = timed(
                lambda spec=spec, path=path, key=key: backtest(cfg, work, key, {**spec, "input": path}, extra)
            )
            reports[key] = {**report, "wall_s": round(wall, 1)}
    for name, report in reports.items():
        table += quality_rows(name, report)
        comparisons += comparison_rows(name, report)
        c = report["cutoffs"]
        d = report["data"]["test"]
        notes.append(
            f"{name} ({Path(report['input']).name}): train cutoffs {c['train'][0]}..{c['train'][-1]}, val "
            f"{c['val']}, test {c['test']} "
            f"({d['rows']} user-days, {d['buyers']} buyers); selected on validation: {report['selection']['model']} "
            f"({report['selection']['reason']}); backtest wall {report['wall_s']:.0f}s."
        )
        best = max((m for m in report["models"] if m["headline"]), key=lambda m: m["metrics"]["roc_auc"])
        notes.append(f"{name}: best test ROC-AUC {best['metrics']['roc_auc']:.4f} by {best['label']}.")
    notes.append(
        "Every row is `python -m tasks.backtest` (the real land, clean, training set, validation and training of "
        f"each family with {seeds} seed(s); the families' rows are their seed ensembles, the mean of the seeds' "
        "calibrated probabilities). 95% intervals: paired bootstrap over users (a user's days and pairs together). "
        "ECE: expected calibration error, 10 equal-mass bins, after / before the packaged calibration."
    )
    notes += signal_notes(signal, manifest["cutoffs"]["test"])
    return {
        "description": "Test ROC-AUC, PR-AUC, calibration error and category NDCG of the four model families (seed "
        "ensembles) and a recency heuristic, through `python -m tasks.backtest` on synthetic data and the real "
        "exports of bench/backtests.yaml, with bootstrap intervals and each family against the best yardstick; "
        "on synthetic data, what the sequences could add.",
        "table": table,
        "tables": [
            {"title": "Each model minus the best yardstick (paired bootstrap over users)", "rows": comparisons},
            {"title": SIGNAL_TITLE, "rows": signal.pop("table")},
        ],
        "notes": notes,
        "backtests": reports,
        "sequence_signal": signal,
    }
