"""Check one partition of a data layer against its reviewed expectation suite (a failed check stops the run).

``python -m spark_jobs.validate events --day 2026-01-02`` (or ``spark-submit spark_jobs/validate.py ...``).
Any layer with a module ``expectations/<layer>.py`` providing ``partition(cfg, day) -> Path`` and
``build_suite(cfg, day) -> ExpectationSuite`` plugs in by name (features, scores, ...). A suite module may
also define ``read(spark, cfg, key) -> DataFrame`` (when the partition is not one Parquet folder, e.g. a
training set's splits) and ``extra_checks(cfg, key, df) -> list[FailedExpectation]`` (Spark-computed
checks outside GX, such as the scores' day-over-day PSI; their failures join the summary). The
training_set layer is keyed by id: ``python -m spark_jobs.validate training_set --training-set-id ID``.
Every run, passed or failed, leaves its summary as JSON at ``tasks.layers.validation_result`` (under
``paths.gx_dir``), which training reads to refuse an unvalidated training set.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import logging
import re
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from spark_jobs.session import start_session
from tasks.config import PipelineConfig, add_common_args, config_from_args, parse_ds
from tasks.errors import run_cli
from tasks.layers import validation_result
from tasks.process import long_lived_imports
from tasks.validation_results import write_result

if TYPE_CHECKING:
    from expectations.runner import FailedExpectation, ValidationSummary

log = logging.getLogger(__name__)


def _check_layer_name(layer: str) -> None:
    if not re.fullmatch(r"[a-z][a-z_]*", layer) or layer in ("runner", "custom", "drift"):
        raise ValueError(f"not a layer name: {layer!r}")


def _suite_module(layer: str):
    _check_layer_name(layer)
    try:
        module = importlib.import_module(f"expectations.{layer}")
    except ModuleNotFoundError as e:
        if e.name != f"expectations.{layer}":
            raise
        raise ValueError(
            f"no expectation suite for layer {layer!r} (expected module expectations/{layer}.py)"
        ) from None
    for fn in ("partition", "build_suite"):
        if not callable(getattr(module, fn, None)):
            raise ValueError(f"expectations/{layer}.py must define {fn}(cfg, day)")
    return module


def _has_parquet(folder: Path) -> bool:
    return any(p.suffix == ".parquet" for p in folder.rglob("*.parquet"))


def _with_query_rows(df, failure: FailedExpectation) -> FailedExpectation:
    """A failed SQL expectation reports only its row count in GX's summary format; rerun its query for a few rows."""
    from expectations.runner import SAMPLE_ROWS

    query = failure.kwargs.get("unexpected_rows_query")
    if failure.expectation != "unexpected_rows_expectation" or failure.sample_rows or failure.exception or not query:
        return failure
    from pyspark.errors import AnalysisException

    view = f"validate_batch_{uuid.uuid4().hex}"
    df.createOrReplaceTempView(view)
    try:
        rows = df.sparkSession.sql(query.format(batch=view)).limit(SAMPLE_ROWS).collect()
    except AnalysisException as e:
        # The query cannot run on this batch (a missing column): GX counted it as failed without saying why.
        return dataclasses.replace(failure, exception=str(e).splitlines()[0][:300])
    finally:
        df.sparkSession.catalog.dropTempView(view)
    return dataclasses.replace(failure, sample_rows=tuple(r.asDict(recursive=True) for r in rows))


def _key_text(key: dt.date | str) -> str:
    return key.isoformat() if isinstance(key, dt.date) else str(key)


def validate_layer(
    cfg: PipelineConfig, layer: str, day: dt.date | str, raise_on_failure: bool = True
) -> ValidationSummary:
    """Validate ``layer``'s partition for ``day`` (a training set id for training_set); raises
    ``DataQualityError`` on failure unless told not to. The outcome is also written as JSON (see module doc)."""
    _check_layer_name(layer)
    name = f"{layer}_{_key_text(day)}"
    # The driver JVM starts while this thread imports the suite and Great Expectations (seconds on one core;
    # hence no module-level import of them here); a partition then found missing wasted that start.
    session = start_session(cfg, f"validate {layer} {_key_text(day)}", short_lived=True)
    with long_lived_imports():
        from expectations.runner import DataQualityError

        module = _suite_module(layer)
    folder = Path(module.partition(cfg, day))
    stored = validation_result(cfg, layer, _key_text(day))
    # A run that crashes must not leave an earlier run's "passed" behind for this partition.
    stored.unlink(missing_ok=True)
    try:
        summary = _run_suite(cfg, module, day, name, folder, session)
    except DataQualityError as e:
        # A suite module's own early failure (e.g. a training set without manifest.json) is a result too.
        write_result(stored, e.summary, layer=layer, key=_key_text(day), partition=folder)
        raise
    write_result(stored, summary, layer=layer, key=_key_text(day), partition=folder)
    log.info("validation result of %s: %s", name, stored)
    if raise_on_failure and not summary.success:
        raise DataQualityError(summary)
    return summary


def _run_suite(
    cfg: PipelineConfig, module, day: dt.date | str, name: str, folder: Path, session: Callable
) -> ValidationSummary:
    from expectations.runner import ValidationSummary, validate_dataframe

    if not folder.is_dir() or not _has_parquet(folder):
        return ValidationSummary(
            name=name,
            success=False,
            n_expectations=0,
            failures=(),
            data_docs=None,
            note=f"partition {folder} is missing or empty (no Parquet files): nothing to validate",
        )
    spark = session()
    read = getattr(module, "read", None)
    df = read(spark, cfg, day) if callable(read) else spark.read.parquet(str(folder))
    summary = validate_dataframe(
        df,
        module.build_suite(cfg, day),
        name=name,
        gx_dir=cfg.paths.gx_dir,
        docs_index_limit=cfg.quality.data_docs_index_limit,
    )
    if not summary.success:
        summary = dataclasses.replace(summary, failures=tuple(_with_query_rows(df, f) for f in summary.failures))
    extra = getattr(module, "extra_checks", None)
    failed = tuple(extra(cfg, day, df)) if callable(extra) else ()
    if failed:
        summary = dataclasses.replace(
            summary,
            success=False,
            n_expectations=summary.n_expectations + len(failed),
            failures=summary.failures + failed,
        )
        log.error("%s", summary.describe())
    return summary


def validate_events(cfg: PipelineConfig, day: dt.date, raise_on_failure: bool = True) -> ValidationSummary:
    """Check events/dt=<day> against ``expectations.events``."""
    return validate_layer(cfg, "events", day, raise_on_failure)


def validate_features(cfg: PipelineConfig, ds: dt.date, raise_on_failure: bool = True) -> ValidationSummary:
    """Check features/user/ds=<ds> against ``expectations.features``."""
    return validate_layer(cfg, "features", ds, raise_on_failure)


def validate_scores(cfg: PipelineConfig, ds: dt.date, raise_on_failure: bool = True) -> ValidationSummary:
    """Check scores/ds=<ds> against ``expectations.scores`` (incl. the PSI against the previous day)."""
    return validate_layer(cfg, "scores", ds, raise_on_failure)


def validate_training_set(
    cfg: PipelineConfig, training_set_id: str, raise_on_failure: bool = True
) -> ValidationSummary:
    """Check training_sets/<id>/ (all three splits) against ``expectations.training_set``."""
    return validate_layer(cfg, "training_set", training_set_id, raise_on_failure)


def main(argv: list[str] | None = None) -> ValidationSummary:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("layer", help="data layer whose suite to run: events, features, scores, training_set")
    key = parser.add_mutually_exclusive_group(required=True)
    key.add_argument("--day", type=parse_ds, help="partition day / cutoff (YYYY-MM-DD)")
    key.add_argument("--training-set-id", help="training set id (layer training_set)")
    args = parser.parse_args(argv)
    if (args.layer == "training_set") != (args.training_set_id is not None):
        parser.error("layer training_set takes --training-set-id; every other layer takes --day")
    summary = validate_layer(config_from_args(args), args.layer, args.day or args.training_set_id)
    print(summary.describe())
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
