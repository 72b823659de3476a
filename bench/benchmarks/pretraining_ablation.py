"""bench pretraining_ablation: does masked-event pretraining of the behaviour encoder help LSTM and BERT, on a
generated synthetic log and on the real exports of bench/backtests.yaml? (issue 26)

Each dataset is one ``python -m tasks.backtest --pretrain lstm,bert``: the real land, clean, training set and
GX gate; an encoder per sequence family pretrained on the training set's train rows (``tasks.pretrain``); then
every family with 3 seeds from fresh weights, and LSTM and BERT with 3 seeds more from their encoders. The
table gives each seed ensemble's test metrics with 95% bootstrap intervals; the comparisons give each
pretrained family minus the same family from fresh weights, and minus the best yardstick (heuristic, LR,
LightGBM), paired bootstrap over users."""

from __future__ import annotations

import argparse

from bench.benchmarks.model_quality import (
    CANDIDATES,
    SEEDS,
    SEQUENCE,
    YARDSTICKS,
    backtest_datasets,
    comparison_rows,
    quality_rows,
    report_family,
)
from bench.data import backtest
from bench.harness import timed, workdir
from tasks.backtest_report import PRETRAINED
from tests.helpers.config import isolated_config


def run(args: argparse.Namespace) -> dict:
    n_users = 400 if args.quick else max(200, int(3000 * args.scale))
    n_days = 10 if args.quick else 14
    seeds = 1 if args.quick else SEEDS
    extra = ["--candidates", ",".join(CANDIDATES), "--seeds", str(seeds), "--pretrain", ",".join(SEQUENCE)]
    if args.quick:
        extra += ["--epochs", "1", "--bootstrap", "200"]
    table, against_fresh, against_yardstick, encoders, notes = [], [], [], [], []
    with workdir("pretraining") as work:
        cfg = isolated_config(work / "var")
        datasets = backtest_datasets(cfg, work, n_users, n_days, notes)
        for i, (name, dcfg, dargs) in enumerate(datasets):
            report, wall = timed(lambda dcfg=dcfg, dargs=dargs, i=i: backtest(dcfg, work, f"d{i}", dargs, extra))
            print(f"  {name}: backtest {wall:.0f}s", flush=True)
            table += quality_rows(name, report)
            for c in comparison_rows(name, report):
                model, ref = report_family(c["model"]), report_family(c["best yardstick"])
                if ref == model.removesuffix(PRETRAINED):
                    against_fresh.append({("reference" if k == "best yardstick" else k): v for k, v in c.items()})
                elif ref in YARDSTICKS and model.removesuffix(PRETRAINED) in SEQUENCE:
                    against_yardstick.append(c)
            fields = ("event_type", "category", "item")
            for family, e in report["pretrained"].items():
                m = e["metrics"]
                encoders.append(
                    {
                        "dataset": name,
                        "family": family,
                        **{
                            f"held-out {f} (majority)": f"{m[f'holdout_acc_{f}']:.3f} ({m[f'majority_acc_{f}']:.3f})"
                            for f in fields
                        },
                        "pretraining s": round(e["wall_s"]),
                    }
                )
            notes.append(
                f"{name}: selected on validation {report['selection']['model']} ({report['selection']['reason']}); "
                f"backtest wall {wall:.0f}s."
            )
    notes.append(
        "Rows are seed ensembles (the mean of the seeds' calibrated probabilities). `<family>-pretrained` started "
        "from a masked-event encoder of that family (tasks.pretrain: 15% of each user's events masked, their event "
        "type, category and item bucket predicted from the rest) pretrained on the same training set's train rows; "
        "validation and test rows were never read by it. Held-out accuracy: on 10% of users held out of the "
        "pretraining, with the majority guess in brackets."
    )
    return {
        "description": "Masked-event pretraining of the LSTM and BERT behaviour encoders: each family from fresh "
        "weights and from its pretrained encoder, 3 seeds each, through `python -m tasks.backtest --pretrain` on "
        "synthetic data and the real exports; paired bootstrap intervals against the same family from fresh "
        "weights and against the best yardstick.",
        "table": table,
        "tables": [
            {
                "title": "Pretrained minus the same family from fresh weights (paired bootstrap over users)",
                "rows": against_fresh,
            },
            {"title": "Each model minus the best yardstick (paired bootstrap over users)", "rows": against_yardstick},
            {"title": "The pretrained encoders: held-out masked-event accuracy (majority guess)", "rows": encoders},
        ],
        "notes": notes,
    }
