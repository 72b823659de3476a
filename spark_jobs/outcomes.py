"""Realized outcomes: judge the scores of every day whose label window has closed by the cutoff ``--ds``.

Which days: ``tasks.outcomes.days_to_evaluate`` over the days the warehouse holds scores of (the day that
closes at this cutoff, and any earlier closed day without outcomes yet); a day whose label events have not
all landed waits for a later night. Per day the pure transforms below join the staged scores
(``scores/ds=<d>/``, the rows the warehouse loaded) with labels built by the feature job's own transforms
(``labels_at``, ``category_labels_at``) over events ``[d, d + horizon)``, and with the categories of each
user's lookback (``features/user_category/ds=<d>/``, the candidates the model ranked). A day the challenger
also scored in the shadow (``scores_shadow/``) is judged for it too, on the same labels. The driver computes
one row per model version and role (``tasks.outcomes.outcome_row``), keeps each scored user's p_purchase
beside their purchase label in ``realized/ds=<d>/role=<role>/`` (the live comparison's input), replaces the
day's rows of ``warehouse.outcomes_table`` in one transaction and logs the metrics to MLflow
(``mlflow.monitoring_experiment``, one run per day, version and role, with a plot of the version's trend).

    python -m spark_jobs.outcomes --ds 2026-01-15 --run-id manual
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.features import category_labels_at, cutoff_instant, labels_at, missing_label_days, read_events
from spark_jobs.session import build_session
from tasks.config import PipelineConfig, add_common_args, config_from_args, parse_ds
from tasks.errors import run_cli
from tasks.layers import ScoringRole, features_partition, realized_partition, scores_partition
from tasks.outcomes import days_to_evaluate, local_midnight, outcome_row
from tasks.partitions import parquet_rows
from tasks.schema import CANDIDATE_CATEGORY_COLUMN, INTENTS, LABEL_COLUMNS, PROBABILITY_COLUMNS, TOP_CATEGORIES_COLUMN
from tasks.warehouse import Warehouse

log = logging.getLogger(__name__)

# Metrics of a day that MLflow charts over the days (the rest stay in the warehouse row).
TREND_METRICS = ("purchase_roc_auc", "purchase_pr_auc", "purchase_ece", "recall_top", "category_hit_rate")


@dataclass(frozen=True)
class OutcomesReport:
    cutoff: dt.date
    evaluated: tuple[dt.date, ...]
    waiting: tuple[dt.date, ...]  # closed days whose label events have not all landed
    rows: tuple[dict[str, Any], ...]

    def describe(self) -> str:
        if not self.rows:
            why = f"; waiting for label events of {', '.join(map(str, self.waiting))}" if self.waiting else ""
            return f"outcomes at cutoff {self.cutoff}: no scored day whose label window closed{why}"
        lines = [f"outcomes at cutoff {self.cutoff}:"]
        for r in self.rows:
            auc = "n/a" if r["purchase_roc_auc"] is None else f"{r['purchase_roc_auc']:.3f}"
            lines.append(
                f"  ds={r['ds']} {r['model_name']} v{r['model_version']} ({r['role']}): {r['n_users']} users, "
                f"{r['n_buyers']} buyers, purchase ROC-AUC {auc}, ECE {_fmt(r['purchase_ece'])}, "
                f"recall in top {r['top_fraction']:.0%} {_fmt(r['recall_top'])}"
            )
        if self.waiting:
            lines.append(f"  waiting for label events of {', '.join(map(str, self.waiting))}")
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def scored_with_labels(scores: DataFrame, labels: DataFrame) -> DataFrame:
    """Every score row with the user's labels of the window (0 for a user who did nothing), plus a row without
    scores for each user who bought in the window but was not scored (new users the features could not see):
    ``scored`` tells them apart, so one pass yields both."""
    return (
        scores.withColumn("scored", F.lit(True))
        .join(labels, "user_id", "full")
        .select(
            *scores.columns,
            F.coalesce(F.col("scored"), F.lit(False)).alias("scored"),
            *[F.coalesce(F.col(c), F.lit(0)).cast("int").alias(c) for c in LABEL_COLUMNS],
        )
        .where(F.col("scored") | (F.col("label_purchase") == 1))
    )


def bought_in_lookback(category_labels: DataFrame, candidates: DataFrame) -> DataFrame:
    """user_id, bought: the categories of the user's lookback (``candidates``) bought in the window."""
    pairs = category_labels.select("user_id", CANDIDATE_CATEGORY_COLUMN).join(
        candidates.select("user_id", CANDIDATE_CATEGORY_COLUMN).distinct(), ["user_id", CANDIDATE_CATEGORY_COLUMN]
    )
    return pairs.groupBy("user_id").agg(F.collect_set(CANDIDATE_CATEGORY_COLUMN).alias("bought"))


def evaluate_day(
    spark: SparkSession,
    cfg: PipelineConfig,
    day: dt.date,
    role: ScoringRole,
    *,
    evaluated_at: dt.datetime,
    run_id: str,
) -> list[dict[str, Any]]:
    """The outcome rows (one per model version) of the role's scores of ``day``, whose label events are all
    present; each scored user's p_purchase and purchase label are kept in ``realized/ds=<day>/role=<role>/``."""
    tz, horizon = cfg.pipeline.timezone, cfg.features.horizon_days
    window = [day + dt.timedelta(days=i) for i in range(horizon)]
    events, _ = read_events(spark, cfg, window)
    cutoff = cutoff_instant(day, tz)
    labels = labels_at(events, [cutoff], horizon, tz).drop("ds")
    scores = spark.read.parquet(str(scores_partition(cfg, day, role)))
    wanted = ["user_id", "model_name", "model_version", *PROBABILITY_COLUMNS]
    has_top = TOP_CATEGORIES_COLUMN in scores.columns
    scores = scores.select(*wanted, *([TOP_CATEGORIES_COLUMN] if has_top else []))
    joined = scored_with_labels(scores, labels)
    candidates_dir = features_partition(cfg, "user_category", day)
    if has_top and candidates_dir.is_dir():
        candidates = spark.read.parquet(str(candidates_dir))
        bought = bought_in_lookback(category_labels_at(events, [cutoff], cfg.features, tz).drop("ds"), candidates)
        joined = joined.join(bought, "user_id", "left")
    else:
        log.warning("ds=%s: no top_categories or no candidates under %s; category metrics skipped", day, candidates_dir)
        joined = joined.withColumn("bought", F.lit(None).cast("array<string>"))
        if not has_top:
            joined = joined.withColumn(TOP_CATEGORIES_COLUMN, F.lit(None).cast("array<string>"))
    everyone = joined.toPandas()
    n_unscored = int((~everyone["scored"]).sum())
    pdf = everyone[everyone["scored"]]
    _write_realized(cfg, day, role, pdf)
    k = min(cfg.training.category_eval_k, cfg.scoring.top_k_categories)
    rows = []
    for (name, version), part in pdf.groupby(["model_name", "model_version"], sort=True):
        rows.append(
            outcome_row(
                ds=day,
                model_name=str(name),
                model_version=str(version),
                role=role,
                probabilities=part[[f"p_{i}" for i in INTENTS]].to_numpy(dtype=np.float64),
                labels=part[list(LABEL_COLUMNS)].to_numpy(dtype=np.int64),
                top_categories=[None if v is None else list(v) for v in part[TOP_CATEGORIES_COLUMN]],
                bought=[set() if v is None else set(v) for v in part["bought"]],
                n_buyers_unscored=int(n_unscored),
                horizon_days=horizon,
                top_fraction=cfg.training.top_k_fraction,
                reliability_bins=cfg.monitoring.reliability_bins,
                category_k=k,
                evaluated_at=evaluated_at,
                pipeline_run_id=run_id,
            )
        )
    return rows


def _write_realized(cfg: PipelineConfig, day: dt.date, role: ScoringRole, pdf) -> None:
    """Replace ``realized/ds=<day>/role=<role>/`` with each scored user's p_purchase and purchase label."""
    folder = realized_partition(cfg, day, role)
    table = pa.Table.from_pandas(
        pdf[["user_id", "model_name", "model_version", "p_purchase", "label_purchase"]], preserve_index=False
    )
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pq.write_table(table, tmp / "part-0.parquet")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _trend_plot(wh: Warehouse, row: dict[str, Any], folder: Path) -> Path:
    """A PNG of the version's realized metrics over its closed days, read back from the warehouse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = wh.outcome_history(row["model_name"], row["model_version"], row["role"])
    fig, ax = plt.subplots(figsize=(8, 4))
    for metric in TREND_METRICS:
        points = [(h["ds"], h[metric]) for h in history if h[metric] is not None]
        if points:
            ax.plot([d for d, _ in points], [v for _, v in points], marker="o", label=metric)
    ax.set_title(f"{row['model_name']} v{row['model_version']} ({row['role']}): realized metrics by scored day")
    ax.set_ylim(0, 1)
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    path = folder / "trend.png"
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def log_to_mlflow(cfg: PipelineConfig, wh: Warehouse, row: dict[str, Any]) -> str:
    """One run per scored day and version in ``mlflow.monitoring_experiment`` (a rerun replaces it): the day's
    metrics stamped with the day, and the trend plot. Returns the run id."""
    import mlflow

    from tasks.experiments import ensure_experiment
    from tasks.registry import mlflow_store

    ds = row["ds"].isoformat()
    version = row["model_version"]
    stamp = int(local_midnight(row["ds"], cfg.pipeline.timezone).timestamp() * 1000)
    with mlflow_store(cfg) as client:
        exp_id = ensure_experiment(client, cfg.mlflow.monitoring_experiment, cfg.mlflow.artifact_location)
        query = (
            f"tags.ds = '{ds}' AND tags.kind = 'realized_outcomes' AND tags.model_version = '{version}' "
            f"AND tags.role = '{row['role']}'"
        )
        for old in client.search_runs([exp_id], filter_string=query):
            client.delete_run(old.info.run_id)
        tags = {
            "ds": ds,
            "kind": "realized_outcomes",
            "model_name": row["model_name"],
            "model_version": version,
            "role": row["role"],
        }
        with mlflow.start_run(experiment_id=exp_id, run_name=f"outcomes-{ds}-v{version}", tags=tags) as run:
            metrics = {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            client.log_batch(
                run.info.run_id,
                metrics=[mlflow.entities.Metric(k, v, stamp, row["ds"].toordinal()) for k, v in metrics.items()],
            )
            with tempfile.TemporaryDirectory() as tmp:
                mlflow.log_artifact(str(_trend_plot(wh, row, Path(tmp))), artifact_path="outcomes")
        return run.info.run_id


def run(cfg: PipelineConfig, cutoff: dt.date, run_id: str, spark: SparkSession | None = None) -> OutcomesReport:
    """Evaluate the scored days whose label window has closed by ``cutoff`` and write their outcome rows."""
    tz, horizon = cfg.pipeline.timezone, cfg.features.horizon_days
    wh = Warehouse.from_config(cfg)
    wh.ensure_schema()
    days = days_to_evaluate(wh.partitions(), wh.outcome_days(), cutoff, horizon, tz)
    waiting = tuple(d for d in days if missing_label_days(cfg, d))
    ready = [d for d in days if d not in waiting]
    if waiting:
        log.warning("label events missing for %s; their outcomes wait for a later run", ", ".join(map(str, waiting)))
    rows: list[dict[str, Any]] = []
    evaluated: list[dt.date] = []
    if ready:
        spark = spark or build_session(cfg, f"outcomes-{cutoff}")
        evaluated_at = local_midnight(cutoff, tz)
        shadow_days = set(wh.partitions("challenger"))
        for day in ready:
            day_rows: list[dict[str, Any]] = []
            roles: list[ScoringRole] = ["champion", "challenger"] if day in shadow_days else ["champion"]
            for role in roles:
                staged = parquet_rows(scores_partition(cfg, day, role)) or 0
                loaded = wh.row_count(day, role)
                if staged != loaded:
                    log.warning(
                        "ds=%s %s skipped: the warehouse holds %d score rows but %s holds %d (rescored, not reloaded)",
                        day,
                        role,
                        loaded,
                        scores_partition(cfg, day, role),
                        staged,
                    )
                    continue
                day_rows += evaluate_day(spark, cfg, day, role, evaluated_at=evaluated_at, run_id=run_id)
            if not day_rows:
                continue
            wh.replace_outcomes(day, pa.Table.from_pylist(day_rows))
            for row in day_rows:
                log.info("ds=%s v%s: MLflow run %s", day, row["model_version"], log_to_mlflow(cfg, wh, row))
            rows.extend(day_rows)
            evaluated.append(day)
    return OutcomesReport(cutoff=cutoff, evaluated=tuple(evaluated), waiting=waiting, rows=tuple(rows))


def main(argv: list[str] | None = None) -> OutcomesReport:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--ds", type=parse_ds, required=True, help="this run's cutoff YYYY-MM-DD")
    parser.add_argument("--run-id", default="manual", help="pipeline run id stored with the rows")
    args = parser.parse_args(argv)
    report = run(config_from_args(args), args.ds, args.run_id)
    print(report.describe())
    return report


if __name__ == "__main__":
    sys.exit(run_cli(main))
