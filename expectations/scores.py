"""Expectation suite of one scores staging partition (scores/ds=<cutoff>/), checked before the warehouse load.

Columns of ``tasks.schema.SCORE_COLUMNS`` (ds is the partition folder); probabilities in [0, 1] and never
null; one row per user, and exactly the users of ``features/user/ds=<ds>/`` (every active user scored,
nobody else); one model version per partition; a p_purchase that is not constant. Beyond GX,
``extra_checks`` measures the shift of p_purchase against the previous day's scores as a PSI over
that day's deciles (``quality.score_psi_bins``); above ``quality.score_psi_threshold`` it warns or, with
``quality.score_psi_action: fail``, fails the gate.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe

from expectations.drift import feature_drift
from expectations.runner import FailedExpectation
from tasks.config import PipelineConfig
from tasks.layers import features_partition, scores_partition
from tasks.partitions import parquet_rows
from tasks.schema import PROBABILITY_COLUMNS, SCORE_COLUMNS

log = logging.getLogger(__name__)

PSI_COLUMN = "p_purchase"
PSI_CHECK = "score_psi_vs_previous_day_at_most"


def partition(cfg: PipelineConfig, day: dt.date) -> Path:
    return scores_partition(cfg, day)


def _sql_path(path: Path) -> str:
    return "parquet.`" + str(path).replace("`", "``") + "`"


def build_suite(cfg: PipelineConfig, day: dt.date) -> gx.ExpectationSuite:
    columns = [c for c in SCORE_COLUMNS if c != "ds"]
    probs = [f"named_struct('column', '{c}', 'value', {c})" for c in PROBABILITY_COLUMNS]
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=False),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToBeUnique(column="user_id"),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(
                "/* probabilities null, NaN or outside [0, 1] */ "
                "SELECT v.column, count(*) AS rows, min(v.value) AS min, max(v.value) AS max, "
                f"min(user_id) AS example_user FROM (SELECT user_id, explode(array({', '.join(probs)})) AS v "
                "FROM {batch}) WHERE v.value IS NULL OR isnan(v.value) OR v.value < 0 OR v.value > 1 "
                "GROUP BY v.column"
            )
        ),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(
                f"/* users differ from the active users of features/user/ds={day.isoformat()} */ "
                "SELECT coalesce(s.user_id, f.user_id) AS user_id, "
                "CASE WHEN s.user_id IS NULL THEN 'not scored' ELSE 'not an active user' END AS problem "
                f"FROM (SELECT DISTINCT user_id FROM {{batch}}) s FULL OUTER JOIN "
                f"(SELECT DISTINCT user_id FROM {_sql_path(features_partition(cfg, 'user', day))}) f "
                "ON s.user_id = f.user_id WHERE s.user_id IS NULL OR f.user_id IS NULL"
            )
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="model_version"),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="model_version", min_value=1, max_value=1),
    ]
    rows = parquet_rows(partition(cfg, day))
    if rows is not None and rows >= cfg.quality.constant_check_min_rows:
        expectations.append(gxe.ExpectColumnUniqueValueCountToBeBetween(column=PSI_COLUMN, min_value=2))
    return gx.ExpectationSuite(name=f"scores_{day.isoformat()}", expectations=expectations)


def score_psi(cfg: PipelineConfig, day: dt.date, current) -> float | None:
    """PSI of ``current``'s p_purchase over the deciles of scores/ds=<day - 1>; None without that partition."""
    previous = partition(cfg, day - dt.timedelta(days=1))
    if parquet_rows(previous) is None:
        return None
    reference = current.sparkSession.read.parquet(str(previous))
    q = cfg.quality
    return feature_drift(current, reference, [PSI_COLUMN], q.score_psi_bins, relative_error=q.quantile_relative_error)[
        PSI_COLUMN
    ]


def extra_checks(cfg: PipelineConfig, day: dt.date, df) -> list[FailedExpectation]:
    """The day-over-day score shift: a failure only with ``score_psi_action: fail``; otherwise logged."""
    q = cfg.quality
    if PSI_COLUMN not in df.columns:
        return []
    value = score_psi(cfg, day, df)
    if value is None:
        log.info("scores ds=%s: no scores partition for %s, day-over-day PSI skipped", day, day - dt.timedelta(days=1))
        return []
    log.info(
        "scores ds=%s: %s PSI vs previous day = %.4f (threshold %s)", day, PSI_COLUMN, value, q.score_psi_threshold
    )
    if value <= q.score_psi_threshold:
        return []
    if q.score_psi_action == "warn":
        log.warning(
            "scores ds=%s: %s PSI %.4f vs the previous day exceeds %s (score_psi_action=warn, not failing)",
            day,
            PSI_COLUMN,
            value,
            q.score_psi_threshold,
        )
        return []
    return [
        FailedExpectation(
            expectation=PSI_CHECK,
            kwargs={
                "column": PSI_COLUMN,
                "threshold": q.score_psi_threshold,
                "bins": q.score_psi_bins,
                "previous": str(partition(cfg, day - dt.timedelta(days=1))),
            },
            observed=round(value, 6),
            unexpected_count=None,
            unexpected_percent=None,
            sample_values=(),
            sample_rows=(),
        )
    ]
