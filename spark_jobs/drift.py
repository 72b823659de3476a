"""The nightly drift job: features of a scoring cutoff against the champion's training reference.

``check_drift`` compares the features of a cutoff (``features/user/ds=<ds>/``) with a reference (by
default the train split of the training set the champion version was trained on), using the PSI and
category share distance of ``expectations.drift``; it logs and returns every column's value, writes them
to ``runs/drift/<ds>.json`` and, with ``quality.drift_action: fail``, raises ``DataQualityError`` when a
column exceeds its threshold. What the comparison needs of the reference (bin edges and counts, top
categories) is computed the first time and kept in ``runs/drift/reference/``: until the champion changes,
a night reads only its own features.

``nightly_drift`` is the nightly DAG's step: it skips (with a log line) when there is no champion yet,
and logs each ds's values to MLflow as one run in ``mlflow.monitoring_experiment`` (tags ``ds`` and
``model_version``; metrics ``psi/<column>``, ``category_distance/<column>`` and ``drifted_columns``, so the
MLflow UI charts each measure in its own section; the JSON report as an artifact).

    python -m spark_jobs.drift --ds D [--reference PATH] [--config ...]
    spark-submit spark_jobs/drift.py --ds D [--config ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from expectations.drift import CATEGORICAL_COLUMNS, DriftError, ReferenceProfile, profile_drift, reference_profile
from expectations.runner import DataQualityError, FailedExpectation, ValidationSummary
from tasks.config import PipelineConfig, add_common_args, config_from_args, parse_ds
from tasks.errors import run_cli
from tasks.layers import (
    DAY_KEY,
    drift_reference_profile,
    drift_report,
    events_root,
    features_partition,
    partition_day,
    training_set_dir,
    training_set_manifest,
    training_set_split,
)
from tasks.schema import TABULAR_PREFIX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftReport:
    ds: dt.date
    current: Path
    reference: Path
    psi: dict[str, float]
    category_distance: dict[str, float]
    drifted: tuple[str, ...]
    action: str
    output: Path
    # Why windowed features drift by construction, when a compared cutoff has less history than the lookback.
    note: str | None = None

    def describe(self) -> str:
        worst = sorted(self.psi.items(), key=lambda kv: -kv[1])[:5]
        text = (
            f"feature drift ds={self.ds} vs {self.reference}: {len(self.drifted)} drifted column(s) "
            f"{list(self.drifted)}; highest PSI {', '.join(f'{c}={v:.4f}' for c, v in worst)}; "
            f"category distance {', '.join(f'{c}={v:.4f}' for c, v in self.category_distance.items())}"
        )
        return f"{text}; {self.note}" if self.note else text


def champion_reference(cfg: PipelineConfig, mv=None) -> Path:
    """The train split of the training set the champion version ``mv`` (default: the current one) was trained on."""
    from tasks.registry import champion

    mv = mv if mv is not None else champion(cfg)
    if mv is None:
        raise DriftError(
            f"no version of {cfg.mlflow.model_name!r} holds @{cfg.mlflow.champion_alias}: no drift reference"
        )
    set_id = (mv.tags or {}).get("training_set_id")
    if not set_id:
        raise DriftError(f"champion version {mv.version} has no training_set_id tag: no drift reference")
    path = training_set_split(training_set_dir(cfg, set_id), "train")
    if not path.is_dir() or not any(path.glob("*.parquet")):
        raise DriftError(f"champion version {mv.version} was trained on {set_id!r}, whose train split {path} is gone")
    return path


def _write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def short_history(cfg: PipelineConfig, ds: dt.date, reference: Path) -> str | None:
    """Why features over long windows differ by construction (None when they need not): the events layer starts
    less than ``features.lookback_days`` before ``ds`` or before the reference training set's first cutoff."""
    root = events_root(cfg)
    days = [d for p in root.iterdir() if (d := partition_day(p.name, DAY_KEY))] if root.is_dir() else []
    if not days:
        return None
    first = min(days)
    manifest = training_set_manifest(Path(reference).parent)
    train = json.loads(manifest.read_text()).get("cutoffs", {}).get("train") if manifest.is_file() else None
    cutoffs = {"ds": ds, "the reference's first cutoff": dt.date.fromisoformat(train[0]) if train else None}
    lookback = cfg.features.lookback_days
    short = {f"{name} {c}": (c - first).days for name, c in cutoffs.items() if c and (c - first).days < lookback}
    if not short:
        return None
    seen = ", ".join(f"{k} has {n}" for k, n in short.items())
    return (
        f"the events start {first}: {seen} of the features.lookback_days={lookback} days of history, so features "
        "over long windows differ by construction (a log of lookback_days plus the training cutoffs avoids it)"
    )


def profile_key(cfg: PipelineConfig, reference: Path, columns: list[str]) -> str:
    """Names a reference's profile: its Parquet files (path, size, modification time), the compared columns and
    the drift settings; a rewritten reference or a changed setting names another profile."""
    q = cfg.quality
    reference = Path(reference)
    files = []
    for f in [reference] if reference.is_file() else sorted(reference.rglob("*.parquet")):
        st = f.stat()
        files.append((f.name if f == reference else str(f.relative_to(reference)), st.st_size, st.st_mtime_ns))
    settings = [q.drift_bins, q.quantile_relative_error, q.drift_top_categories, columns]
    payload = json.dumps([str(reference.resolve()), files, settings], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def reference_profile_of(
    cfg: PipelineConfig, spark, reference: Path, columns: list[str], current_columns: list[str]
) -> ReferenceProfile:
    """The profile of ``reference`` over ``columns`` and the categorical columns both sides have: read from
    ``runs/drift/reference/`` when an earlier night computed it, computed (and kept) otherwise. The champion's
    reference is the same every night until a new champion, so a night reads only its own features."""
    q = cfg.quality
    ref = spark.read.parquet(str(reference))
    categorical = [c for c in CATEGORICAL_COLUMNS if c in current_columns and c in ref.columns]
    kept = drift_reference_profile(cfg, profile_key(cfg, reference, [*columns, *categorical]))
    if kept.is_file():
        try:
            profile = ReferenceProfile.from_json(json.loads(kept.read_text()))
        except (ValueError, KeyError, TypeError) as e:  # not one this code wrote: profile the reference again
            log.warning(
                "drift reference profile %s is unreadable (%s: %s); profiling %s again",
                kept,
                type(e).__name__,
                e,
                reference,
            )
        else:
            log.info("drift reference profile %s (of %s)", kept, reference)
            return profile
    profile = reference_profile(
        ref, columns, categorical, q.drift_bins, q.quantile_relative_error, q.drift_top_categories
    )
    _write_json_atomic(kept, {"reference": str(reference), **profile.to_json()})
    return profile


def check_drift(cfg: PipelineConfig, ds: dt.date, reference: Path | None = None, spark=None) -> DriftReport:
    """Drift of features/user/ds=<ds> against ``reference`` (default: the champion's train split)."""
    from spark_jobs.session import build_session

    q = cfg.quality
    current_path = features_partition(cfg, "user", ds)
    if not current_path.is_dir() or not any(current_path.glob("*.parquet")):
        raise DriftError(f"no features for ds={ds}: {current_path} holds no Parquet files")
    reference = Path(reference) if reference is not None else champion_reference(cfg)
    if not reference.exists():
        raise DriftError(f"drift reference {reference} does not exist")
    spark = spark or build_session(cfg, f"drift-{ds}")
    current = spark.read.parquet(str(current_path))
    columns = list(q.drift_columns) or [c for c in current.columns if c.startswith(TABULAR_PREFIX)]
    values, categories = profile_drift(current, reference_profile_of(cfg, spark, reference, columns, current.columns))
    drifted = tuple(
        [c for c, v in values.items() if v > q.drift_psi_threshold]
        + [c for c, v in categories.items() if v > q.drift_category_threshold]
    )
    output = drift_report(cfg, ds)
    report = DriftReport(
        ds=ds,
        current=current_path,
        reference=reference,
        psi=values,
        category_distance=categories,
        drifted=drifted,
        action=q.drift_action,
        output=output,
        note=short_history(cfg, ds, reference) if drifted else None,
    )
    _write_json_atomic(
        output,
        {
            **asdict(report),
            "psi_threshold": q.drift_psi_threshold,
            "category_threshold": q.drift_category_threshold,
            "bins": q.drift_bins,
        },
    )
    for c, v in sorted(values.items()):
        log.info("drift ds=%s %s psi=%.4f%s", ds, c, v, " DRIFTED" if c in drifted else "")
    for c, v in categories.items():
        log.info("drift ds=%s %s share distance=%.4f%s", ds, c, v, " DRIFTED" if c in drifted else "")
    if drifted:
        log.warning("%s", report.describe())
        if q.drift_action == "fail":
            raise DataQualityError(_summary(report, q.drift_psi_threshold, q.drift_category_threshold))
    return report


def _summary(report: DriftReport, psi_threshold: float, category_threshold: float) -> ValidationSummary:
    failures = []
    for c in report.drifted:
        if c in report.psi:
            name, threshold, value = "feature_psi_at_most", psi_threshold, report.psi[c]
        else:
            name, threshold, value = "category_share_distance_at_most", category_threshold, report.category_distance[c]
        failures.append(
            FailedExpectation(
                expectation=name,
                kwargs={"column": c, "threshold": threshold, "reference": str(report.reference)},
                observed=round(value, 6),
                unexpected_count=None,
                unexpected_percent=None,
                sample_values=(),
                sample_rows=(),
            )
        )
    return ValidationSummary(
        name=f"drift_{report.ds.isoformat()}",
        success=False,
        n_expectations=len(report.psi) + len(report.category_distance),
        failures=tuple(failures),
        data_docs=None,
    )


def log_to_mlflow(cfg: PipelineConfig, report: DriftReport, mv) -> str:
    """Log ``report`` as the monitoring run of its ds (replacing an earlier run of that ds); returns its id.

    One run per ds in ``mlflow.monitoring_experiment``, tagged with the champion version it was measured
    against, so a version's drift history is one search: ``tags.model_version = 'V'``.
    """
    import mlflow

    from tasks.experiments import ensure_experiment
    from tasks.registry import mlflow_store

    ds = report.ds.isoformat()
    metrics = {f"psi/{c}": v for c, v in report.psi.items()}
    metrics.update({f"category_distance/{c}": v for c, v in report.category_distance.items()})
    metrics["drifted_columns"] = float(len(report.drifted))
    with mlflow_store(cfg) as client:
        exp_id = ensure_experiment(client, cfg.mlflow.monitoring_experiment, cfg.mlflow.artifact_location)
        # A rerun of a ds replaces its run, as it replaces its partitions.
        for old in client.search_runs([exp_id], filter_string=f"tags.ds = '{ds}' AND tags.kind = 'feature_drift'"):
            client.delete_run(old.info.run_id)
        tags = {
            "ds": ds,
            "kind": "feature_drift",
            "model_name": mv.name,
            "model_version": str(mv.version),
            "drift_action": report.action,
            "drifted": ",".join(report.drifted),
        }
        with mlflow.start_run(experiment_id=exp_id, run_name=f"drift-{ds}", tags=tags) as run:
            mlflow.log_metrics(metrics)
            mlflow.log_artifact(str(report.output), artifact_path="drift")
        return run.info.run_id


def nightly_drift(cfg: PipelineConfig, ds: dt.date, spark=None) -> DriftReport | None:
    """The nightly drift step: ``check_drift`` against the champion's reference, logged to MLflow.

    Returns None (and says why) when there is nothing to compare with: no champion yet (the first
    night), or, with ``drift_action: warn``, a champion whose training reference is gone.
    """
    from tasks.registry import champion

    mv = champion(cfg)
    if mv is None:
        log.warning(
            "drift skipped for ds=%s: no version of %r holds @%s yet (first night), so there is no training reference",
            ds,
            cfg.mlflow.model_name,
            cfg.mlflow.champion_alias,
        )
        return None
    try:
        reference = champion_reference(cfg, mv)
    except DriftError as e:
        if cfg.quality.drift_action == "fail":
            raise
        log.warning("drift skipped for ds=%s (drift_action=warn): %s", ds, e)
        return None
    try:
        report = check_drift(cfg, ds, reference, spark=spark)
    except DataQualityError:
        # drift_action=fail and a column drifted: the report is on disk; record it before the run stops.
        failed = _read_report(cfg, ds)
        print(f"drift report: {failed.output}", flush=True)
        _log_run(cfg, failed, mv)
        raise
    _log_run(cfg, report, mv)
    return report


def _log_run(cfg: PipelineConfig, report: DriftReport, mv) -> None:
    run_id = log_to_mlflow(cfg, report, mv)
    print(
        f"drift ds={report.ds} vs champion v{mv.version}: MLflow run {run_id} "
        f"(experiment {cfg.mlflow.monitoring_experiment})",
        flush=True,
    )


def _read_report(cfg: PipelineConfig, ds: dt.date) -> DriftReport:
    path = drift_report(cfg, ds)
    saved = json.loads(path.read_text())
    return DriftReport(
        ds=ds,
        current=Path(saved["current"]),
        reference=Path(saved["reference"]),
        psi=saved["psi"],
        category_distance=saved["category_distance"],
        drifted=tuple(saved["drifted"]),
        action=saved["action"],
        output=path,
        note=saved.get("note"),
    )


def main(argv: list[str] | None = None) -> DriftReport | None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--ds", type=parse_ds, required=True, help="scoring cutoff YYYY-MM-DD")
    parser.add_argument(
        "--reference",
        type=Path,
        help="reference Parquet (default: the champion's training set train split, and the result is logged to MLflow)",
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if args.reference is not None:
        report = check_drift(cfg, args.ds, args.reference)
    else:
        report = nightly_drift(cfg, args.ds)
    if report is not None:
        print(report.describe())
        print(f"drift report: {report.output}")
    return report


if __name__ == "__main__":
    sys.exit(run_cli(main))
