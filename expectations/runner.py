"""Run an expectation suite on a Spark DataFrame through Great Expectations and summarise the outcome.

The DataFrame is validated in place by GX's Spark data source (nothing is collected to pandas); a
file-backed GX project under ``gx_dir`` keeps the validation results and renders Data Docs (HTML) that read
offline (``expectations.data_docs``; the site is ``tasks.layers.data_docs_site``).
A failure becomes a ``DataQualityError`` whose message lists each failed expectation, its observed
value and a few failing rows, so a stopped pipeline says what was wrong without opening the docs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.data_context.types.base import ProgressBarsConfig

from expectations.custom import duplicates_counted_ahead
from expectations.data_docs import configure_site
from tasks.errors import DataError
from tasks.layers import data_docs_site

log = logging.getLogger(__name__)

SAMPLE_ROWS = 3
# Asks GX for the unexpected values and, for row-wise expectations, a few whole failing rows.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_ROWS, "include_unexpected_rows": True}
# First pass over every expectation: counts and observed values (Data Docs render them), no samples; a
# zero sample size turns GX's sample queries into Spark's empty LIMIT 0 (no job).
FIRST_PASS_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0}


@dataclass(frozen=True)
class FailedExpectation:
    expectation: str
    kwargs: dict[str, Any]
    observed: Any
    unexpected_count: int | None
    unexpected_percent: float | None
    sample_values: tuple[Any, ...]
    sample_rows: tuple[dict[str, Any], ...]
    exception: str | None = None

    def describe(self) -> str:
        shown = {k: v for k, v in self.kwargs.items() if k not in ("batch_id", "result_format")}
        args = ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
        text = f"{self.expectation}({args})"
        if self.exception:
            return f"{text}: raised {self.exception}"
        if self.unexpected_count is not None:
            pct = f" ({self.unexpected_percent:.3g}%)" if self.unexpected_percent is not None else ""
            text += f": {self.unexpected_count} unexpected row(s){pct}"
            if self.sample_values:
                text += f", e.g. values {_short(list(self.sample_values))}"
        else:
            text += f": observed {_short(self.observed)}"
        for row in self.sample_rows:
            text += f"\n      row: {_short(row, 300)}"
        return text


@dataclass(frozen=True)
class ValidationSummary:
    name: str
    success: bool
    n_expectations: int
    failures: tuple[FailedExpectation, ...]
    data_docs: Path | None
    note: str | None = None  # a failure found before any expectation could run (e.g. an empty partition)

    def describe(self) -> str:
        head = f"data quality check {self.name!r}: "
        if self.note:
            return head + ("" if self.success else "FAILED: ") + self.note
        if self.success:
            return head + f"all {self.n_expectations} expectations passed"
        lines = [head + f"{len(self.failures)} of {self.n_expectations} expectations failed"]
        lines += [f"  - {f.describe()}" for f in self.failures]
        if self.data_docs:
            lines.append(f"  Data Docs: {self.data_docs}")
        return "\n".join(lines)


class DataQualityError(DataError):
    """A suite failed; the message is the readable ``ValidationSummary.describe()``."""

    def __init__(self, summary: ValidationSummary):
        super().__init__(summary.describe())
        self.summary = summary


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _failure(result: Any) -> FailedExpectation:
    cfg = result.expectation_config
    res = result.result or {}
    rows = res.get("unexpected_rows") or []
    raised = _raised(result.exception_info)
    return FailedExpectation(
        expectation=cfg.type,
        kwargs=dict(cfg.kwargs),
        observed=res.get("observed_value"),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=res.get("unexpected_percent"),
        sample_values=tuple(res.get("partial_unexpected_list") or ())[:SAMPLE_ROWS],
        sample_rows=tuple(r.asDict() if hasattr(r, "asDict") else dict(r) for r in rows[:SAMPLE_ROWS]),
        exception=raised,
    )


def _raised(info: Any) -> str | None:
    """The error an expectation raised, if any. GX reports it either flat ({raised_exception,
    exception_message, ...}) or, when a metric it needs failed, as {metric id: ExceptionInfo}."""
    if not info:
        return None
    flat = hasattr(info, "raised_exception") or (isinstance(info, dict) and "raised_exception" in info)
    entries = [info] if flat else list(info.values())
    for entry in entries:
        get = entry.get if isinstance(entry, dict) else lambda k, e=entry: getattr(e, k, None)
        if get("raised_exception"):
            return str(get("exception_message") or "").splitlines()[0][:300] or "an exception (no message)"
    return None


def _fresh(result: Any) -> Any:
    """The expectation behind a validation result, detached from its suite (no id) for a new suite."""
    expectation = result.expectation_config.to_domain_obj()
    expectation.id = None
    return expectation


def _checkpoint(context, batch_def, suite: gx.ExpectationSuite, key: str, result_format: dict):
    suite.name = key
    suite = context.suites.add_or_update(suite)
    validation = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=key, data=batch_def, suite=suite)
    )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=key,
            validation_definitions=[validation],
            actions=[UpdateDataDocsAction(name="update_data_docs")],
            result_format=result_format,
        )
    )


def validate_dataframe(
    df, suite: gx.ExpectationSuite, *, name: str, gx_dir: Path, docs_index_limit: int | None = None
) -> ValidationSummary:
    """Validate Spark DataFrame ``df`` against ``suite``; results and Data Docs go under ``gx_dir``, whose
    index page lists the ``docs_index_limit`` most recent results (None: all).

    Two passes: every expectation first without samples (``FIRST_PASS_FORMAT``: GX then computes the
    counts and observed values, bundled into few Spark jobs); only the ones that failed run again to fetch
    sample values and rows. Fetching samples for every expectation cost a filtered scan each, even when
    the data was clean. Both passes land in the Data Docs.
    """
    gx_dir = Path(gx_dir)
    gx_dir.mkdir(parents=True, exist_ok=True)
    # The duplicate-key count, the longest job of an events gate, runs while GX sets up and computes the rest.
    with duplicates_counted_ahead(df, suite):
        context = gx.get_context(mode="file", project_root_dir=str(gx_dir))
        # Progress bars would flood task logs (Airflow, spark-submit) with carriage-return noise.
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        # Every validation rebuilds the index page, reading each result it lists (one file read apiece): a year of
        # nightly gates would otherwise add seconds to every gate. Older results stay stored with their pages.
        configure_site(context, docs_index_limit)
        key = _safe_name(name)
        # Not persisted: GX would first cache the whole batch in memory, and building the columnar cache of every
        # column cost more than the few Parquet scans the two passes make (measured on the events suite).
        source = context.data_sources.add_or_update_spark(name="pipeline_spark", persist=False)
        asset = next((a for a in source.assets if a.name == key), None) or source.add_dataframe_asset(name=key)
        batch_def = next((b for b in asset.batch_definitions if b.name == "whole"), None)
        batch_def = batch_def or asset.add_batch_definition_whole_dataframe("whole")
        outcome = _checkpoint(context, batch_def, suite, key, FIRST_PASS_FORMAT).run(batch_parameters={"dataframe": df})
    (run_result,) = outcome.run_results.values()
    failed = [r for r in run_result.results if not r.success]
    failures: tuple[FailedExpectation, ...] = ()
    if failed:
        detail = gx.ExpectationSuite(name=f"{key}_failures", expectations=[_fresh(r) for r in failed])
        rerun = _checkpoint(context, batch_def, detail, f"{key}_failures", RESULT_FORMAT).run(
            batch_parameters={"dataframe": df}
        )
        (detail_result,) = rerun.run_results.values()
        # Same order as ``failed``; should a rerun pass (a source that changed between passes), the
        # first pass's verdict stands, without samples.
        failures = tuple(
            _failure(again if not again.success else first)
            for first, again in zip(failed, detail_result.results, strict=True)
        )
    docs = data_docs_site(gx_dir) / "index.html"
    summary = ValidationSummary(
        name=name,
        success=not failed,
        n_expectations=len(run_result.results),
        failures=failures,
        data_docs=docs if docs.exists() else None,
    )
    log.info("%s", summary.describe())
    log.info("Data Docs for %s: %s", name, summary.data_docs)
    return summary


def check(
    df, suite: gx.ExpectationSuite, *, name: str, gx_dir: Path, docs_index_limit: int | None = None
) -> ValidationSummary:
    """``validate_dataframe``, raising ``DataQualityError`` when any expectation fails."""
    summary = validate_dataframe(df, suite, name=name, gx_dir=gx_dir, docs_index_limit=docs_index_limit)
    if not summary.success:
        raise DataQualityError(summary)
    return summary
