"""The nightly monitoring verdicts that read the registry and the warehouse: whether the champion has gone stale.

The rules are plain functions of ``tasks.outcomes``; this module gathers their inputs (the champion version and
its test ROC-AUC from the registry, its judged days from the warehouse, the cutoff's drift report) and writes
each verdict to ``var/runs/health/<ds>.json``.

    python -m tasks.monitoring health --ds 2026-01-15
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from tasks.config import PipelineConfig, add_common_args, config_from_args, parse_ds
from tasks.errors import run_cli
from tasks.layers import drift_report, health_report
from tasks.outcomes import Health, assess_health, health_floor


def shadow_needed(cfg: PipelineConfig, ds: dt.date) -> bool:
    """Whether a version holds @challenger, so the night scores it in the shadow. Without one, a shadow staging
    partition of ``ds`` left by an earlier run of the night is removed, so the load leaves no shadow rows."""
    import shutil

    from tasks.layers import scores_partition
    from tasks.registry import challenger

    if challenger(cfg) is not None:
        return True
    shutil.rmtree(scores_partition(cfg, ds, "challenger"), ignore_errors=True)
    return False


def nightly_health(cfg: PipelineConfig, ds: dt.date) -> Health:
    """``assess_health`` of the current champion at cutoff ``ds`` from the warehouse's outcome rows and the
    cutoff's drift report (when ``monitoring.degraded_on_drift``); written to ``var/runs/health/<ds>.json``."""
    from tasks.registry import champion
    from tasks.warehouse import Warehouse

    m = cfg.monitoring
    current = champion(cfg)
    version: str | None = None
    history: list[dict[str, Any]] = []
    test_auc = None
    if current is not None:
        version = str(current.version)
        wh = Warehouse.from_config(cfg)
        wh.ensure_schema()
        history = [r for r in wh.outcome_history(current.name, version, "champion") if r["ds"] < ds]
        tag = (current.tags or {}).get("test_purchase_roc_auc")
        test_auc = float(tag) if tag else None
    drifted: list[str] = []
    report = drift_report(cfg, ds)
    if m.degraded_on_drift and report.is_file():
        drifted = list(json.loads(report.read_text()).get("drifted", []))
    health = assess_health(
        ds,
        version,
        history,
        floor=health_floor(m.degraded_min_auc, m.degraded_max_drop, test_auc),
        days=m.degraded_days,
        drifted=drifted,
    )
    out = health_report(cfg, ds)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(health.as_json(), indent=2) + "\n")
    return health


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(
        argparse.ArgumentParser(prog="python -m tasks.monitoring", description=__doc__.splitlines()[0])
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_health = sub.add_parser("health", help="whether the champion is degraded at cutoff ds, and why")
    p_health.add_argument("--ds", type=parse_ds, required=True, help="the cutoff YYYY-MM-DD")
    args = parser.parse_args(argv)
    health = nightly_health(config_from_args(args), args.ds)
    print(health.describe())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
