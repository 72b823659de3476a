"""bench text_ablation: what the pretrained text encoder's vectors and masked-event pretraining bring LSTM and BERT,
on a generated synthetic log whose queries and category codes are real words (issue 26.7).

One ``python -m tasks.backtest --pretrain lstm,bert --without-text lstm,bert``: the real land, clean, training set
(with the vectors of its texts) and GX gate; every family with 3 seeds reading text, LSTM and BERT 3 seeds more
without it (``<family>-notext``) and 3 more from a masked-event encoder pretrained on the same training set
(``<family>-pretrained``, text on), all on the same splits. The comparisons: text minus no text, text and
pretraining minus no text, text and pretraining minus text alone, each minus the best yardstick (heuristic, LR,
LightGBM); paired bootstrap over users. The real exports are not here: the Taobao log has no text at all (its
models read none), and the REES46 sample covers three hours, too short to backtest (bench text_zero_shot uses
it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.benchmarks.model_quality import (
    CANDIDATES,
    SEEDS,
    SEQUENCE,
    YARDSTICKS,
    comparison_rows,
    quality_rows,
    report_family,
    synthetic_args,
)
from bench.data import backtest
from bench.harness import timed, workdir
from tasks.backtest_report import NO_TEXT, PRETRAINED
from tasks.config import with_overrides
from tests.helpers.config import isolated_config


def run(args: argparse.Namespace) -> dict:
    n_users = 400 if args.quick else max(200, int(3000 * args.scale))
    n_days = 10 if args.quick else 14
    seeds = 1 if args.quick else SEEDS
    extra = ["--candidates", ",".join(CANDIDATES), "--seeds", str(seeds)]
    extra += ["--pretrain", ",".join(SEQUENCE), "--without-text", ",".join(SEQUENCE)]
    if args.quick:
        extra += ["--epochs", "1", "--bootstrap", "200"]
    with workdir("text") as work:
        cfg = isolated_config(work / "var")
        # Three quarters of the variant categories launch in the last quarter of the log, so the test day has
        # buyers in categories the train split never saw (generator.new_categories).
        launches = {"share": 0.75, "from_fraction": 0.75}
        syn = with_overrides(cfg, {"generator": {"n_users": n_users, "n_days": n_days, "new_categories": launches}})
        name = f"synthetic {n_users}u x {n_days}d"
        report, wall = timed(
            lambda: backtest(syn, work, "synthetic", synthetic_args(syn, work / "syn-export", n_users, n_days), extra)
        )
        manifest = Path(report["layers"]["training_set"]) / "manifest.json"
        text = json.loads(manifest.read_text())["text"]
    table = quality_rows(name, report)
    against_variant, against_yardstick = [], []
    for c in comparison_rows(name, report):
        model, ref = report_family(c["model"]), report_family(c["best yardstick"])
        base = model.removesuffix(PRETRAINED).removesuffix(NO_TEXT)
        if ref in YARDSTICKS:
            if base in SEQUENCE:
                against_yardstick.append(c)
        else:
            against_variant.append({("reference" if k == "best yardstick" else k): v for k, v in c.items()})
    notes = [
        f"{name}: selected on validation {report['selection']['model']} ({report['selection']['reason']}); "
        f"backtest wall {wall:.0f}s.",
        "Rows are seed ensembles (the mean of the seeds' calibrated probabilities). `<family>` read each event's text "
        "(its search query, else its category code) and each candidate's category code through the frozen vectors "
        f"of the pretrained encoder; `<family>{NO_TEXT}` trained on the same training set without them; "
        f"`<family>{PRETRAINED}` read text and started from a masked-event encoder pretrained on the train rows.",
    ]
    if text:
        notes.append(f"Texts of the training set: {text['texts']} ({text['from_layer']} from the layer).")
    first = report["models"][0]["metrics"]
    notes.append(
        f"HitRate@{report['k']} / top 1 unseen: over the {int(first.get('unseen_buyer_days', 0))} test user-days "
        "that bought in a candidate category the train split never mentions (launched part-way through the log, "
        f"generator.new_categories), one of those in the top {report['k']} / ranked first. Those user-days have "
        f"{first.get('unseen_candidates', float('nan')):.1f} candidates on average, so the top {report['k']} often "
        "holds them all; the top 1 is what separates the models. An unseen category id is out of every model's "
        "vocabulary: only its code's text (a variant of a known product kind's code, e.g. electronics.smartphone.pro) "
        "and the pair features tell it apart."
    )
    return {
        "description": "Text (pretrained all-MiniLM-L6-v2 vectors of queries and category codes) and masked-event "
        "pretraining in LSTM and BERT: each with text, without text, and with text and pretraining, 3 seeds each, "
        "through `python -m tasks.backtest --pretrain lstm,bert --without-text lstm,bert` on a synthetic log; "
        "paired bootstrap intervals against the variants and against the best yardstick.",
        "table": table,
        "tables": [
            {"title": "Between the variants of one family (paired bootstrap over users)", "rows": against_variant},
            {"title": "Each LSTM/BERT variant minus the best yardstick (paired bootstrap)", "rows": against_yardstick},
        ],
        "notes": notes,
        "wall_s_backtest": round(wall, 1),
    }
