"""Champion/challenger gate over the MLflow model registry.

A candidate version is evaluated beside the current ``@champion`` on the same test split (both loaded
as pyfuncs by URI, exactly as scoring loads them). It takes the champion alias only when its purchase
ROC-AUC reaches ``gate.min_auc`` and is at most ``gate.max_auc_drop`` below the champion's; otherwise
it becomes ``challenger``. A champion fitted on labels inside the candidate's test split (a retrain for an
older logical date) keeps the alias: it cannot be judged there, and a model of older data does not replace
one of newer data. The decision, both metrics and the reason are written as version tags.
Before any of that, ``training_decision`` tells the training DAG whether a run would learn from anything
the champion has not seen (other cutoffs or another label horizon); if not, training is skipped.

``live_gate`` is the second gate, run nightly: it judges ``@challenger`` (scored in the shadow) against
``@champion`` on realized outcomes of the same users and days (``gate.promote_on_live``).

``select`` comes first when the training DAG trains several candidate families: it picks one on the
validation split (``training.selection``) and registers it; the gate then judges that version.

CLI:
    python -m tasks.registry select --run-id R1 --run-id R2 ...
    python -m tasks.registry gate --version V --training-set DIR
    python -m tasks.registry show
    python -m tasks.registry should-train --training-set-id ID --last-cutoff D [--horizon H] [--force]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.config import ConfigError, PipelineConfig, add_common_args, config_from_args, parse_ds, with_overrides
from tasks.evaluate import GATE_METRIC, evaluate_intents
from tasks.layers import (
    CUTOFF_KEY,
    layer_root,
    partition_day,
    realized_partition,
    training_set_manifest,
    training_set_split,
)
from tasks.run_summary import metrics_text, mlflow_run_url
from tasks.schema import LABEL_COLUMNS, PROBABILITY_COLUMNS

CHALLENGER_ALIAS = "challenger"

log = logging.getLogger(__name__)


class GateError(RuntimeError):
    """The gate could not decide (unknown version, unusable test split)."""


@dataclass(frozen=True)
class GateDecision:
    version: str
    promoted: bool
    alias: str
    candidate_auc: float
    champion_version: str | None
    champion_auc: float | None
    reason: str


_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextmanager
def mlflow_store(cfg: PipelineConfig) -> Iterator:
    """Point mlflow's fluent API (runs, log_model, load_model) at the config's store for a block.

    ``mlflow.set_tracking_uri`` also writes MLFLOW_TRACKING_URI into os.environ, which
    ``load_config`` would then read as an override for every later config in this process; the
    previous URIs and environment are restored on exit. Yields a client bound to the store.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    uri = cfg.mlflow.resolved_tracking_uri
    saved_env = {k: os.environ.get(k) for k in _URI_ENV}
    saved_tracking, saved_registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield MlflowClient(tracking_uri=uri, registry_uri=uri)
    finally:
        mlflow.set_tracking_uri(saved_tracking)
        registry_utils._registry_uri = saved_registry
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _client(cfg: PipelineConfig):
    from mlflow import MlflowClient

    uri = cfg.mlflow.resolved_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _version_by_alias(cfg: PipelineConfig, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return _client(cfg).get_model_version_by_alias(cfg.mlflow.model_name, alias)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def champion(cfg: PipelineConfig):
    """The ModelVersion holding the champion alias, or None when there is none yet."""
    return _version_by_alias(cfg, cfg.mlflow.champion_alias)


@dataclass(frozen=True)
class TrainingDecision:
    train: bool
    reason: str


def decide_training(
    training_set_id: str,
    cutoffs: dict[str, list[str]],
    horizon_days: int,
    champion_version: str | None,
    champion_training_set_id: str | None,
    champion_manifest: dict | None,
    force: bool = False,
) -> TrainingDecision:
    """Whether a training run has anything new to learn from compared with the current champion.

    Nothing is new when the champion was trained on the same cutoffs of every split with the same
    label horizon (its training-set manifest), or, when that manifest cannot be read, on a training
    set of the same id. ``force`` trains regardless.
    """
    if force:
        return TrainingDecision(True, "force_retrain is set: training regardless of the champion")
    if champion_version is None:
        return TrainingDecision(True, "no champion yet")
    same = "nothing new; force_retrain=true trains anyway"
    if champion_manifest is not None:
        old_cutoffs = {k: list(v) for k, v in (champion_manifest.get("cutoffs") or {}).items()}
        old_horizon = champion_manifest.get("horizon_days")
        if old_cutoffs == {k: list(v) for k, v in cutoffs.items()} and old_horizon == horizon_days:
            return TrainingDecision(
                False,
                f"champion v{champion_version} was trained on the same cutoffs {_span(cutoffs)} "
                f"with horizon {horizon_days}d (training set {champion_manifest.get('id')}): {same}",
            )
        return TrainingDecision(
            True,
            f"new data: cutoffs {_span(cutoffs)} horizon {horizon_days}d vs champion v{champion_version}'s "
            f"{_span(old_cutoffs)} horizon {old_horizon}d",
        )
    if champion_training_set_id == training_set_id:
        return TrainingDecision(
            False, f"champion v{champion_version} was trained on training set {training_set_id}: {same}"
        )
    return TrainingDecision(
        True, f"training set {training_set_id} differs from champion v{champion_version}'s {champion_training_set_id}"
    )


def _span(cutoffs: dict[str, list[str]]) -> str:
    days = sorted(d for v in cutoffs.values() for d in v)
    return f"{days[0]}..{days[-1]}" if days else "(none)"


def champion_manifest(cfg: PipelineConfig, mv) -> dict | None:
    """The training-set manifest the version was trained on, as logged with its MLflow run.

    The run's copy is the record: the training_sets/ folder of the same id may have been rebuilt since.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    if not mv.run_id:
        return None
    try:
        with mlflow_store(cfg):
            return mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/training_set/manifest.json")
    except (MlflowException, OSError, ValueError):
        return None


def training_decision(cfg: PipelineConfig, training_set_id: str, last_cutoff, force: bool = False) -> TrainingDecision:
    """``decide_training`` for the set ``training_set_id`` ending at ``last_cutoff`` under ``cfg``'s horizon."""
    from tasks.cutoffs import plan_cutoffs

    plan = plan_cutoffs(cfg, last_cutoff)
    current = None if force else champion(cfg)
    return decide_training(
        training_set_id,
        plan.as_manifest(),
        cfg.features.horizon_days,
        champion_version=None if current is None else str(current.version),
        champion_training_set_id=None if current is None else (current.tags or {}).get("training_set_id"),
        champion_manifest=None if current is None else champion_manifest(cfg, current),
        force=force,
    )


def _set_manifest(training_set_dir: Path) -> dict | None:
    try:
        return json.loads(training_set_manifest(training_set_dir).read_text())
    except (OSError, ValueError):
        return None


def read_test_split(training_set_dir: Path) -> pd.DataFrame:
    files = sorted(training_set_split(training_set_dir, "test").glob("*.parquet"))
    if not files:
        raise GateError(f"training set {training_set_dir} has no Parquet files in test/")
    import pyarrow.parquet as pq

    pdf = pq.read_table([str(f) for f in files]).to_pandas()
    missing = [c for c in LABEL_COLUMNS if c not in pdf.columns]
    if missing:
        raise GateError(f"test split of {training_set_dir} lacks label columns {missing}")
    if pdf[list(LABEL_COLUMNS)].isna().any().any():
        raise GateError(f"test split of {training_set_dir} has null labels")
    return pdf


def evaluate_version(cfg: PipelineConfig, version: str, test: pd.DataFrame) -> dict[str, float]:
    """Test metrics of ``models:/<name>/<version>`` loaded as a pyfunc."""
    import mlflow

    with mlflow_store(cfg):
        model = mlflow.pyfunc.load_model(f"models:/{cfg.mlflow.model_name}/{version}")
    probs = model.predict(test)
    if list(probs.columns) != list(PROBABILITY_COLUMNS) or len(probs) != len(test):
        raise GateError(f"version {version} returned {list(probs.columns)} x {len(probs)}, not the scoring contract")
    return evaluate_intents(
        test[list(LABEL_COLUMNS)].to_numpy(dtype=np.int64),
        probs.to_numpy(dtype=np.float64),
        threshold=cfg.training.threshold,
        top_k_fraction=cfg.training.top_k_fraction,
    )


def unfair_comparison(champion_version: str, champion_set: dict | None, test_set: dict | None) -> str | None:
    """Why the champion cannot be judged on this test split, or None: the labels of the cutoffs it was fitted
    and calibrated on (train and val of its training-set manifest) must end by the first test cutoff.

    A retrain for an older logical date (a backfill) meets a champion fitted on that date's test labels; the
    comparison would favour the champion, and a model of older data should not replace one of newer data
    anyway. Without both manifests nothing can be said (None).
    """
    if not champion_set or not test_set:
        return None
    import datetime as dt

    fitted = sorted(c for split in ("train", "val") for c in (champion_set.get("cutoffs") or {}).get(split, []))
    tests = sorted((test_set.get("cutoffs") or {}).get("test", []))
    if not fitted or not tests:
        return None
    horizon = int(champion_set.get("horizon_days") or 1)
    labels_end = dt.date.fromisoformat(fitted[-1]) + dt.timedelta(days=horizon)
    if labels_end <= dt.date.fromisoformat(tests[0]):
        return None
    return (
        f"champion v{champion_version} was fitted on labels up to {labels_end - dt.timedelta(days=1)} (cutoffs up to "
        f"{fitted[-1]}, horizon {horizon}d), inside this test split (first cutoff {tests[0]}): it cannot be judged "
        "on it, and a candidate trained on older data does not replace a champion trained on newer data"
    )


def gate(cfg: PipelineConfig, version: str, training_set_dir: Path) -> GateDecision:
    """Compare candidate ``version`` with ``@champion`` on the test split and move the aliases."""
    from mlflow.exceptions import MlflowException

    version = str(version)
    client = _client(cfg)
    name = cfg.mlflow.model_name
    try:
        candidate = client.get_model_version(name, version)
    except MlflowException as e:
        raise GateError(f"model {name!r} has no version {version!r}: {e.message}") from None
    test = read_test_split(training_set_dir)
    cand = evaluate_version(cfg, version, test)
    cand_auc = cand[GATE_METRIC]
    current = champion(cfg)
    champ_version = champ_auc = unfair = None
    if current is not None:
        champ_version = str(current.version)
        champ_auc = cand_auc if champ_version == version else evaluate_version(cfg, champ_version, test)[GATE_METRIC]
        if champ_version != version:
            unfair = unfair_comparison(champ_version, champion_manifest(cfg, current), _set_manifest(training_set_dir))

    if not math.isfinite(cand_auc):
        promoted, reason = False, "test split has a single purchase class; ROC-AUC undefined"
    elif cand_auc < cfg.gate.min_auc:
        promoted, reason = False, f"candidate AUC {cand_auc:.4f} < min_auc {cfg.gate.min_auc:.4f}"
    elif champ_auc is None:
        promoted, reason = True, f"no champion yet; candidate AUC {cand_auc:.4f} >= min_auc {cfg.gate.min_auc:.4f}"
    elif champ_version == version:
        promoted, reason = True, f"version {version} is already the champion"
    elif unfair is not None:
        promoted, reason = False, unfair
    elif cand_auc >= champ_auc - cfg.gate.max_auc_drop:
        promoted, reason = (
            True,
            (
                f"candidate AUC {cand_auc:.4f} >= champion v{champ_version} AUC {champ_auc:.4f} "
                f"- max_auc_drop {cfg.gate.max_auc_drop:.4f}"
            ),
        )
    else:
        promoted, reason = (
            False,
            (
                f"candidate AUC {cand_auc:.4f} < champion v{champ_version} AUC {champ_auc:.4f} "
                f"- max_auc_drop {cfg.gate.max_auc_drop:.4f}"
            ),
        )

    alias = cfg.mlflow.champion_alias if promoted else CHALLENGER_ALIAS
    tags = {
        "gate_decision": "promoted" if promoted else "rejected",
        "gate_alias": alias,
        "gate_candidate_auc": f"{cand_auc:.6f}",
        "gate_champion_version": champ_version or "",
        "gate_champion_auc": "" if champ_auc is None else f"{champ_auc:.6f}",
        "gate_reason": reason,
        "gate_training_set": str(Path(training_set_dir).resolve()),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, alias, version)
    if promoted:
        # A promoted version is no longer a challenger.
        aliases = client.get_model_version(name, version).aliases
        if CHALLENGER_ALIAS in aliases:
            client.delete_registered_model_alias(name, CHALLENGER_ALIAS)
    # The log ends with the decision, the test metrics it was made on and where to see the candidate's run.
    log.info("gate: version %s -> @%s (%s)", version, alias, reason)
    log.info("gate: test metrics of v%s: %s", version, metrics_text(cand))
    if candidate.run_id:
        log.info("gate: MLflow run of v%s: %s", version, mlflow_run_url(cfg, candidate.run_id))
    return GateDecision(
        version=version,
        promoted=promoted,
        alias=alias,
        candidate_auc=cand_auc,
        champion_version=champ_version,
        champion_auc=champ_auc,
        reason=reason,
    )


@dataclass(frozen=True)
class Candidate:
    """One candidate family's training run as the selection reads it."""

    run_id: str
    model_type: str
    val: dict[str, float]  # the kept model's validation metrics (tasks.evaluate.VAL_KEPT)
    test: dict[str, float]


@dataclass(frozen=True)
class Selection:
    version: str
    run_id: str
    model_type: str
    reason: str
    # Per candidate: family, run id, its selection and tie-break metrics on validation, ROC-AUC / PR-AUC on test.
    candidates: list[dict]


def choose(candidates: list[Candidate], metric: str, tie_break: str, tie_margin: float) -> tuple[Candidate, str]:
    """The candidate with the best validation ``metric``; among those within ``tie_margin`` of it, the one with
    the best ``tie_break`` (then the best ``metric``, then the order given). Returns it and why, in words.
    A metric a candidate could not measure (one class in validation) counts as worst."""
    if not candidates:
        raise GateError("no candidates to choose from")

    def value(c: Candidate, name: str) -> float:
        v = c.val.get(name, math.nan)
        return v if math.isfinite(v) else -math.inf

    best = max(value(c, metric) for c in candidates)
    if best == -math.inf:
        raise GateError(f"no candidate has a validation {metric}: " + ", ".join(c.run_id for c in candidates))
    tied = [c for c in candidates if value(c, metric) >= best - tie_margin]
    chosen = max(tied, key=lambda c: (value(c, tie_break), value(c, metric)))
    ranking = ", ".join(
        f"{c.model_type} {value(c, metric):.4f}" for c in sorted(candidates, key=lambda c: -value(c, metric))
    )
    reason = f"best validation {metric} ({ranking})"
    if len(tied) > 1:
        others = ", ".join(f"{c.model_type} {value(c, tie_break):.4f}" for c in tied)
        reason = (
            f"{len(tied)} within {tie_margin} of the best validation {metric} ({ranking}); "
            f"best {tie_break} of them ({others})"
        )
    return chosen, reason


def read_candidate(client, run_id: str) -> tuple[Candidate, str]:
    """The candidate logged by training run ``run_id`` and its training-set id."""
    from mlflow.exceptions import MlflowException

    from tasks.evaluate import VAL_KEPT

    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise GateError(f"no training run {run_id!r}: {e.message}") from None
    metrics = run.data.metrics
    val = {k.removeprefix(f"{VAL_KEPT}/"): v for k, v in metrics.items() if k.startswith(f"{VAL_KEPT}/")}
    if not val:
        raise GateError(f"run {run_id} has no {VAL_KEPT}/ metrics: it is not a finished candidate training")
    test = {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")}
    model_type = run.data.params.get("model_type", "?")
    return Candidate(run_id, model_type, val, test), run.data.tags.get("training_set_id", "")


def select(cfg: PipelineConfig, run_ids: list[str]) -> Selection:
    """Choose among the candidate training runs ``run_ids`` (one training set, models logged, not registered)
    by ``training.selection`` on validation, register the chosen run's model as a new version and tag it with
    every candidate's metrics and the reason; each candidate run is tagged chosen / not chosen.

    Rerunning it registers nothing new: a run whose model is already a version keeps that version."""
    import mlflow

    from tasks.models.pyfunc import MODEL_ARTIFACT

    s = cfg.training.selection
    client = _client(cfg)
    read = [read_candidate(client, r) for r in dict.fromkeys(run_ids)]
    set_ids = {set_id for _, set_id in read}
    if len(set_ids) > 1:
        raise GateError(f"candidates were trained on different training sets {sorted(set_ids)}; compare like with like")
    candidates = [c for c, _ in read]
    chosen, reason = choose(candidates, s.metric, s.tie_break, s.tie_margin)
    name = cfg.mlflow.model_name
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{chosen.run_id}'")
    if existing:
        version = str(existing[0].version)
    else:
        with mlflow_store(cfg):
            version = str(mlflow.register_model(f"runs:/{chosen.run_id}/{MODEL_ARTIFACT}", name).version)
    table = [
        {
            "model_type": c.model_type,
            "run_id": c.run_id,
            f"val_{s.metric}": c.val.get(s.metric),
            f"val_{s.tie_break}": c.val.get(s.tie_break),
            "test_purchase_roc_auc": c.test.get("purchase_roc_auc"),
            "test_purchase_pr_auc": c.test.get("purchase_pr_auc"),
        }
        for c in candidates
    ]
    tag_version(cfg, version, set_ids.pop(), chosen.model_type, chosen.test)
    tags = {
        "selection_metric": s.metric,
        "selection_reason": reason,
        "selection_candidates": json.dumps(table),
    }
    tags.update(
        {f"candidate.{c.model_type}.val_{s.metric}": f"{c.val.get(s.metric, math.nan):.6f}" for c in candidates}
    )
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    for c in candidates:
        client.set_tag(c.run_id, "selection", "chosen" if c is chosen else "not chosen")
        client.set_tag(c.run_id, "selection_version", version)
    log.info("select: %s (run %s) -> version %s: %s", chosen.model_type, chosen.run_id, version, reason)
    return Selection(version, chosen.run_id, chosen.model_type, reason, table)


def tag_version(
    cfg: PipelineConfig, version: str, training_set_id: str, model_type: str, test_metrics: dict[str, float]
) -> None:
    """The tags every registered version carries: its training set, family and test ROC-AUC."""
    client = _client(cfg)
    for key, value in {
        "training_set_id": training_set_id,
        "model_type": model_type,
        "test_purchase_roc_auc": f"{test_metrics.get('purchase_roc_auc', math.nan):.6f}",
    }.items():
        client.set_model_version_tag(cfg.mlflow.model_name, version, key, value)


def challenger(cfg: PipelineConfig):
    """The ModelVersion holding @challenger, or None."""
    return _version_by_alias(cfg, CHALLENGER_ALIAS)


def realized_pairs(cfg: PipelineConfig, champion_version: str, challenger_version: str) -> tuple[pd.DataFrame, int]:
    """The rows both versions scored on the closed days they were both judged on (``realized/``): ds, user_id,
    label_purchase, p_champion, p_challenger; and the number of those days."""
    frames = []
    for folder in sorted(layer_root(cfg, "realized").glob(f"{CUTOFF_KEY}=*")):
        day = partition_day(folder.name, CUTOFF_KEY)
        if day is None:
            continue
        paths = {role: realized_partition(cfg, day, role) for role in ("champion", "challenger")}
        if not all(p.is_dir() for p in paths.values()):
            continue
        champ = pd.read_parquet(paths["champion"])
        chal = pd.read_parquet(paths["challenger"])
        champ = champ[champ["model_version"].astype(str) == champion_version]
        chal = chal[chal["model_version"].astype(str) == challenger_version]
        both = champ.merge(chal, on="user_id", suffixes=("_champion", "_challenger"))
        if both.empty:
            continue
        frames.append(
            pd.DataFrame(
                {
                    "ds": day,
                    "user_id": both["user_id"],
                    "label_purchase": both["label_purchase_champion"],
                    "p_champion": both["p_purchase_champion"],
                    "p_challenger": both["p_purchase_challenger"],
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["ds", "user_id", "label_purchase", "p_champion", "p_challenger"]), 0
    return pd.concat(frames, ignore_index=True), len(frames)


def live_gate(cfg: PipelineConfig):
    """Judge @challenger against @champion on realized outcomes (``tasks.outcomes.live_decision``) and record the
    decision as tags of the challenger's version; with ``gate.promote_on_live: auto`` a winning challenger takes
    @champion (and the champion it replaced is tagged). None when there is nothing to compare or it is off."""
    from tasks.outcomes import live_decision

    g = cfg.gate
    champ, chal = champion(cfg), challenger(cfg)
    if g.promote_on_live == "off" or champ is None or chal is None:
        return None
    rows, days = realized_pairs(cfg, str(champ.version), str(chal.version))
    decision = live_decision(
        rows["user_id"].to_numpy(),
        rows["label_purchase"].to_numpy(),
        rows["p_champion"].to_numpy(),
        rows["p_challenger"].to_numpy(),
        champion_version=str(champ.version),
        challenger_version=str(chal.version),
        days=days,
        min_days=g.live_min_days,
        min_gain=g.live_min_gain,
        mode=g.promote_on_live,
        resamples=g.live_resamples,
    )
    set_version_tags(cfg, str(chal.version), decision.tags())
    if decision.action == "promote":
        client = _client(cfg)
        name = cfg.mlflow.model_name
        client.set_registered_model_alias(name, cfg.mlflow.champion_alias, chal.version)
        client.delete_registered_model_alias(name, CHALLENGER_ALIAS)
        set_version_tags(cfg, str(champ.version), {"replaced_by_live": str(chal.version)})
    log.info("live gate: %s: %s", decision.action, decision.reason)
    return decision


def set_version_tags(cfg: PipelineConfig, version: str, tags: dict[str, str]) -> None:
    """Set ``tags`` on a version of the registered model."""
    client = _client(cfg)
    for key, value in tags.items():
        client.set_model_version_tag(cfg.mlflow.model_name, version, key, value)


def show(cfg: PipelineConfig) -> list[dict]:
    """Every version of the registered model with its aliases and gate tags, newest first."""
    from mlflow.exceptions import MlflowException

    client = _client(cfg)
    try:
        # Version search results carry no aliases; the registered model has the alias -> version map.
        alias_map = client.get_registered_model(cfg.mlflow.model_name).aliases or {}
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    versions = client.search_model_versions(f"name = '{cfg.mlflow.model_name}'")
    rows = [
        {
            "version": str(v.version),
            "aliases": sorted(a for a, ver in alias_map.items() if str(ver) == str(v.version)),
            "run_id": v.run_id,
            "status": v.status,
            "tags": dict(v.tags or {}),
        }
        for v in versions
    ]
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.registry", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = add_common_args(sub.add_parser("gate", help="compare a version with @champion and move aliases"))
    g.add_argument("--version", required=True, help="candidate model version (as registered by training)")
    g.add_argument("--training-set", type=Path, required=True, help="training-set folder whose test/ split is used")
    add_common_args(sub.add_parser("show", help="list versions, aliases and gate tags as JSON"))
    sel = add_common_args(sub.add_parser("select", help="register the best of candidate training runs"))
    sel.add_argument("--run-id", action="append", required=True, help="a candidate's training run (repeatable)")
    d = add_common_args(sub.add_parser("should-train", help="whether a training set would bring anything new"))
    d.add_argument("--training-set-id", required=True, help="id the training set would be built under")
    d.add_argument("--last-cutoff", type=parse_ds, required=True, help="its last cutoff (YYYY-MM-DD)")
    d.add_argument("--horizon", type=int, help="label horizon in days (default: features.horizon_days)")
    d.add_argument("--force", action="store_true", help="train even when nothing is new")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if args.command == "gate":
        print(json.dumps(asdict(gate(cfg, args.version, args.training_set)), indent=2))
    elif args.command == "select":
        print(json.dumps(asdict(select(cfg, args.run_id)), indent=2))
    elif args.command == "should-train":
        if args.horizon is not None:
            try:
                cfg = with_overrides(cfg, {"features": {"horizon_days": args.horizon}})
            except ConfigError as e:
                parser.error(f"--horizon {args.horizon}: {e}")
        decision = training_decision(cfg, args.training_set_id, args.last_cutoff, args.force)
        print(json.dumps(asdict(decision), indent=2))
        # Exit 0 when training should run, 1 when it should be skipped (usable from a shell `if`).
        return 0 if decision.train else 1
    else:
        print(json.dumps(show(cfg), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
