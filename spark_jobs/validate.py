"""Check one partition of a data layer against its reviewed expectation suite (a failed check stops the run).

``python -m spark_jobs.validate events --day 2026-01-02`` (or ``spark-submit spark_jobs/validate.py ...``).
Any layer with a module ``expectations/<layer>.py`` providing ``partition(cfg, day) -> Path`` and
``build_suite(cfg, day) -> ExpectationSuite`` plugs in by name (features, scores, ...).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import re
import sys
from pathlib import Path

from expectations.runner import DataQualityError, ValidationSummary, validate_dataframe
from spark_jobs.session import build_session
from tasks.config import PipelineConfig, add_common_args, config_from_args, parse_ds
from tasks.errors import run_cli

log = logging.getLogger(__name__)


def _suite_module(layer: str):
    if not re.fullmatch(r"[a-z][a-z_]*", layer) or layer == "runner":
        raise ValueError(f"not a layer name: {layer!r}")
    try:
        module = importlib.import_module(f"expectations.{layer}")
    except ModuleNotFoundError as e:
        if e.name != f"expectations.{layer}":
            raise
        raise ValueError(f"no expectation suite for layer {layer!r} (expected module expectations/{layer}.py)") from None
    for fn in ("partition", "build_suite"):
        if not callable(getattr(module, fn, None)):
            raise ValueError(f"expectations/{layer}.py must define {fn}(cfg, day)")
    return module


def _has_parquet(folder: Path) -> bool:
    return any(p.suffix == ".parquet" for p in folder.rglob("*.parquet"))


def validate_layer(cfg: PipelineConfig, layer: str, day: dt.date, raise_on_failure: bool = True) -> ValidationSummary:
    """Validate ``layer``'s partition for ``day``; raises ``DataQualityError`` on failure unless told not to."""
    module = _suite_module(layer)
    folder = Path(module.partition(cfg, day))
    if not folder.is_dir() or not _has_parquet(folder):
        raise DataQualityError(
            ValidationSummary(
                name=f"{layer}_{day.isoformat()}",
                success=False,
                n_expectations=0,
                failures=(),
                data_docs=None,
                note=f"partition {folder} is missing or empty (no Parquet files): nothing to validate",
            )
        )
    spark = build_session(cfg, f"validate {layer} {day}")
    df = spark.read.parquet(str(folder))
    summary = validate_dataframe(df, module.build_suite(cfg, day), name=f"{layer}_{day.isoformat()}", gx_dir=cfg.paths.gx_dir)
    if raise_on_failure and not summary.success:
        raise DataQualityError(summary)
    return summary


def validate_events(cfg: PipelineConfig, day: dt.date, raise_on_failure: bool = True) -> ValidationSummary:
    """Check events/dt=<day> against ``expectations.events``."""
    return validate_layer(cfg, "events", day, raise_on_failure)


def main(argv: list[str] | None = None) -> ValidationSummary:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("layer", help="data layer whose suite to run (events, ...)")
    parser.add_argument("--day", type=parse_ds, required=True, help="partition day / cutoff (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    summary = validate_layer(config_from_args(args), args.layer, args.day)
    print(summary.describe())
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
