"""Training sets: point-in-time feature rows with labels over a range of daily cutoffs, split by cutoff.

The cutoffs are consecutive days ending at the last cutoff whose label window has fully landed:
``n_train_cutoffs`` for training, then ``n_val_cutoffs``, then ``n_test_cutoffs``. With a horizon of
h days, h - 1 cutoffs are left out between splits so no validation/test label window overlaps a
training one (the range grows by those days; each split keeps its configured count).

Output ``training_sets/<id>/``: ``{train,val,test}/`` (user rows: user_id, ds, weight, f_*, seq_*, label_*),
``user_category/{train,val,test}/`` (user x category candidates with label_purchase_in_category),
with text.enabled ``texts/`` (the vector of every text the rows carry, from the text-embedding layer or
encoded here; the manifest's ``text`` names the encoder) and ``manifest.json``. Each split is written as
``files_per_split`` Parquet files, range-partitioned by (ds, user_id), so every DDP rank can read its own
files. The whole folder is built under a temporary
name and swapped in, so a rerun with the same id replaces it and a failure leaves the old one intact.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import sys
import uuid
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.features import (
    USER_CATEGORY_LABEL,
    build_features_at,
    build_user_category_at,
    cutoff_instant,
    latest_labelled_cutoff,
    read_events,
)
from tasks.availability import missing_training_events
from tasks.config import ConfigError, PipelineConfig, add_common_args, config_from_args, parse_ds, with_overrides
from tasks.cutoffs import SPLITS, CutoffPlan, default_id, plan_cutoffs
from tasks.errors import DataError, NoDataError, run_cli
from tasks.layers import (
    events_root,
    training_set_candidates,
    training_set_dir,
    training_set_manifest,
    training_set_split,
    training_set_texts,
    training_sets_root,
)
from tasks.schema import (
    CANDIDATE_TEXT_COLUMN,
    LABEL_COLUMNS,
    SEQUENCE_COLUMNS,
    SEQUENCE_TEXT_COLUMN,
    tabular_columns,
    user_category_columns,
)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Resolution of the per-row uniform draw used for negative subsampling.
_SAMPLE_RESOLUTION = 1_000_000


class TrainingSetError(DataError, RuntimeError):
    """The events layer cannot support the requested training set (missing days, no history, empty split)."""


class MissingEventsError(TrainingSetError, NoDataError):
    """An events day the training set needs has not landed (exit 65 like any data error: not retried)."""


@dataclass(frozen=True)
class TrainingSetInfo:
    path: Path
    manifest: dict


def _check_events(cfg: PipelineConfig, plan: CutoffPlan) -> None:
    reason = missing_training_events(cfg, plan.last)
    if reason:
        raise MissingEventsError(reason)


def subsample_negatives(df: DataFrame, rate: float, where: Column | None = None) -> DataFrame:
    """Keep a ``rate`` fraction of the rows (among those matching ``where``) whose labels are all 0,
    re-weighted by 1/rate so weighted losses and rates stay unbiased; other rows are untouched."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"negative_sample_rate must be in (0, 1], got {rate}")
    if rate == 1.0:
        return df
    sampled = reduce(lambda a, b: a & b, [F.col(c) == 0 for c in LABEL_COLUMNS])
    if where is not None:
        sampled = sampled & where
    # A hash of (user, ds) rather than rand(): the same rows are kept on every rerun.
    draw = F.pmod(F.xxhash64("user_id", F.col("ds").cast("string"), F.lit("negatives")), F.lit(_SAMPLE_RESOLUTION))
    keep = ~sampled | (draw < F.lit(int(rate * _SAMPLE_RESOLUTION)))
    return df.where(keep).withColumn("weight", F.when(sampled, F.lit(1.0 / rate)).otherwise(F.col("weight")))


def _write_split(df: DataFrame, path: Path, n_files: int, key: list[str]) -> list[str]:
    # Range partitioning on a unique key gives n non-empty files whenever there are >= n rows.
    df.repartitionByRange(n_files, *key).sortWithinPartitions(*key).write.mode("errorifexists").parquet(str(path))
    return sorted(p.name for p in path.glob("*.parquet"))


def _write_texts(spark: SparkSession, cfg: PipelineConfig, users: DataFrame, user_cats: DataFrame, path: Path) -> dict:
    """(text, vector) of every event and candidate-category text of the set (all splits: scoring would encode
    them too, and they carry no label) into ``path``, one file sorted by text; the manifest's ``text`` entry."""
    from spark_jobs.text_embeddings import configured_encoder, vectors_for

    texts = users.select(F.explode(SEQUENCE_TEXT_COLUMN).alias("text")).unionAll(
        user_cats.select(F.col(CANDIDATE_TEXT_COLUMN).alias("text"))
    )
    found = vectors_for(spark, cfg, texts.where(F.length("text") > 0))
    try:
        found.vectors.coalesce(1).sortWithinPartitions("text").write.mode("errorifexists").parquet(str(path))
    finally:
        found.vectors.unpersist()
    identity, encoder = configured_encoder(cfg)
    return {
        "encoder": encoder,
        "identity": dataclasses.asdict(identity),
        "dim": identity.dim,
        "texts": found.n_texts,
        "from_layer": found.n_from_layer,
        "sequence_column": SEQUENCE_TEXT_COLUMN,
        "candidate_column": CANDIDATE_TEXT_COLUMN,
    }


def _stats(df: DataFrame, label_cols: list[str]) -> tuple[dict[str, int], dict[str, dict[str, float]]]:
    rows = df.groupBy("_split").agg(F.count(F.lit(1)).alias("n"), *[F.avg(c).alias(c) for c in label_cols]).collect()
    by = {r["_split"]: r for r in rows}
    counts = {s: int(by[s]["n"]) if s in by else 0 for s in SPLITS}
    rates = {s: {c: float(by[s][c]) for c in label_cols} for s in SPLITS if s in by}
    return counts, rates


def build(
    cfg: PipelineConfig,
    last_cutoff: dt.date | None = None,
    training_set_id: str | None = None,
    spark: SparkSession | None = None,
) -> TrainingSetInfo:
    """Build training_sets/<id>/ for the cutoffs ending at ``last_cutoff`` (default: the latest labelled one)."""
    from spark_jobs.session import build_session

    fcfg, tcfg, tz = cfg.features, cfg.training_set, cfg.pipeline.timezone
    last = last_cutoff or latest_labelled_cutoff(cfg)
    plan = plan_cutoffs(cfg, last)
    set_id = training_set_id or default_id(plan)
    if not _ID.match(set_id):
        raise TrainingSetError(f"training set id {set_id!r} must match {_ID.pattern}")
    _check_events(cfg, plan)

    spark = spark or build_session(cfg, f"training-set-{set_id}")
    dt_first = plan.first - dt.timedelta(days=fcfg.lookback_days)
    dt_last = plan.last + dt.timedelta(days=fcfg.horizon_days - 1)
    events, used = read_events(
        spark, cfg, [dt_first + dt.timedelta(days=i) for i in range((dt_last - dt_first).days + 1)]
    )
    events = events.persist()

    split_of = plan.split_of()
    cutoffs = [cutoff_instant(d, tz) for d in sorted(split_of)]
    split_col = F.create_map(*[x for d, s in split_of.items() for x in (F.lit(d.isoformat()), F.lit(s))])
    split_of_ds = split_col[F.col("ds").cast("string")]
    text = cfg.text.enabled
    u = build_features_at(events, cutoffs, fcfg, tz, with_labels=True, text=text)
    users = u.select("user_id", "ds", split_of_ds.alias("_split"), F.lit(1.0).alias("weight"), *u.columns[2:])
    uc = build_user_category_at(events, cutoffs, fcfg, tz, with_labels=True, text=text)
    user_cats = uc.select("user_id", "category_id", "ds", split_of_ds.alias("_split"), *uc.columns[3:])
    users = subsample_negatives(users, tcfg.negative_sample_rate, where=F.col("_split") == "train").persist()
    user_cats = user_cats.persist()

    root = training_sets_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    final = training_set_dir(cfg, set_id)
    tmp = root / f".tmp-{set_id}-{uuid.uuid4().hex}"
    try:
        counts, rates = _stats(users, list(LABEL_COLUMNS))
        empty = [s for s in SPLITS if counts[s] == 0]
        if empty:
            raise TrainingSetError(
                "no user is active in the lookback of the cutoffs of split(s) "
                + "; ".join(f"{s}: {', '.join(d.isoformat() for d in getattr(plan, s))}" for s in empty)
            )
        uc_counts, uc_rates = _stats(user_cats, [USER_CATEGORY_LABEL])
        files, uc_files = {}, {}
        for s in SPLITS:
            files[s] = _write_split(
                users.where(F.col("_split") == s).drop("_split"),
                training_set_split(tmp, s),
                tcfg.files_per_split,
                ["ds", "user_id"],
            )
            uc_files[s] = _write_split(
                user_cats.where(F.col("_split") == s).drop("_split"),
                training_set_candidates(tmp, s),
                tcfg.files_per_split,
                ["ds", "user_id", "category_id"],
            )
            if len(files[s]) < min(2, counts[s]):
                raise TrainingSetError(f"split {s} was written as {len(files[s])} file(s); expected at least 2")
        text_info = _write_texts(spark, cfg, users, user_cats, training_set_texts(tmp)) if text else None
        manifest = {
            "id": set_id,
            "cutoffs": plan.as_manifest(),
            "dropped_cutoffs": [d.isoformat() for d in plan.dropped],
            "rows": counts,
            "positive_rate": rates,
            "files": {s: [(training_set_split(Path(), s) / name).as_posix() for name in files[s]] for s in SPLITS},
            "key_columns": ["user_id", "ds"],
            "weight_column": "weight",
            "feature_columns": tabular_columns(fcfg),
            "sequence_columns": list(SEQUENCE_COLUMNS),
            "label_columns": list(LABEL_COLUMNS),
            "sequence_length": fcfg.sequence_length,
            "item_buckets": fcfg.item_buckets,
            "gap_bucket_cap": fcfg.gap_bucket_cap,
            "lookback_days": fcfg.lookback_days,
            "horizon_days": fcfg.horizon_days,
            "timezone": tz,
            "negative_sample_rate": tcfg.negative_sample_rate,
            "user_category": {
                "feature_columns": user_category_columns(fcfg),
                "label_column": USER_CATEGORY_LABEL,
                "rows": uc_counts,
                "positive_rate": uc_rates,
                "files": {
                    s: [(training_set_candidates(Path(), s) / name).as_posix() for name in uc_files[s]] for s in SPLITS
                },
            },
            "text": text_info,
            "source": {
                "events_path": str(events_root(cfg)),
                "dt_first": dt_first.isoformat(),
                "dt_last": dt_last.isoformat(),
                "dts_read": [d.isoformat() for d in used],
            },
        }
        training_set_manifest(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _swap(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        users.unpersist()
        user_cats.unpersist()
        events.unpersist()
    return TrainingSetInfo(path=final, manifest=manifest)


def _swap(tmp: Path, final: Path) -> None:
    # Two renames on one file system; the old set is removed only once the new one is in place.
    old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex}")
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--last-cutoff", type=parse_ds, help="last cutoff YYYY-MM-DD (default: latest labelled)")
    parser.add_argument("--id", dest="training_set_id", help="training set id (default: from the cutoff range)")
    parser.add_argument(
        "--horizon", type=int, help="label horizon in days (default: features.horizon_days); validated like the config"
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if args.horizon is not None:
        try:
            cfg = with_overrides(cfg, {"features": {"horizon_days": args.horizon}})
        except ConfigError as e:
            parser.error(f"--horizon {args.horizon}: {e}")
    info = build(cfg, args.last_cutoff, args.training_set_id)
    print(info.path)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
