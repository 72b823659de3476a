"""Bulk scoring of one cutoff's user features with the champion model, into the scores staging layer.

The driver resolves ``models:/<name>@<champion alias>`` once and pins ``models:/<name>/<version>`` for
the whole run, so an alias moved mid-run cannot mix versions. It loads that version once itself before
any Spark work (``check_champion``): missing or truncated artifacts stop the run with one line naming
the version and the file, not a worker's Java stack. Every feature row of
``features/user/ds=<ds>/`` is scored with ``mapInArrow``; each Python worker loads the pyfunc model
once (module-level cache keyed by URI) and hands it ``scoring.batch_size`` rows at a time (the size of
the Arrow batches Spark sends it, too, so JVM conversion overlaps the model calls). Each user's
candidate categories ride along on the user row as parallel arrays, written there by the features job
(``spark_jobs.features.attach_candidates``), so the category head ranks them in the same forward pass and
the job has no shuffle; a features partition written without them gets them joined from
``features/user_category/ds=<ds>/`` here. The rows
(``tasks.schema.SCORE_COLUMNS``, ``top_categories`` with the ``scoring.top_k_categories`` most likely
categories as "<category_id>:<probability>", and ``reasons`` when ``scoring.reasons_top_k`` > 0) replace
``scores/ds=<ds>/`` by dynamic partition overwrite; ``tasks.warehouse.load_scores`` moves them on.
With ``--role challenger`` the version holding ``@challenger`` scores the same rows into the shadow,
``scores_shadow/ds=<ds>/`` (the warehouse's shadow table, which no reader's view shows); its realized
outcomes are compared with the champion's on the same users (``spark_jobs.outcomes``).
A model that reads text gets, broadcast to every worker, the vectors of the texts first seen after its
training (the text-embedding layer's partitions since; ``new_text_vectors``), so a query typed or a category
coded since then is read rather than counted as no text.

    python -m spark_jobs.score --ds D --run-id R [--config ...]
    spark-submit spark_jobs/score.py --ds D --run-id R [--role challenger] [--config ...]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import PipelineConfig, add_common_args, config_from_args, parse_ds
from tasks.errors import DataError, run_cli
from tasks.layers import (
    CUTOFF_KEY,
    DAY_KEY,
    SCORING_ROLES,
    ScoringRole,
    features_partition,
    partition_day,
    scores_partition,
    scores_root,
    text_embeddings_root,
)
from tasks.partitions import parquet_rows
from tasks.schema import (
    CANDIDATE_ARRAY_CATEGORY,
    CANDIDATE_ARRAY_PREFIX,
    CANDIDATE_ARRAY_TEXT,
    CANDIDATE_CATEGORY_COLUMN,
    PROBABILITY_COLUMNS,
    REASONS_COLUMN,
    SCORE_COLUMNS,
    SEQUENCE_COLUMNS,
    SEQUENCE_TEXT_COLUMN,
    TABULAR_PREFIX,
    TOP_CATEGORIES_COLUMN,
)


class ScoringError(RuntimeError):
    """Scoring cannot run (no champion, missing features, model/feature mismatch)."""


class ChampionArtifactError(ScoringError, DataError):
    """The champion version's artifacts are missing or corrupt; rerunning will not help (exit 65)."""


@dataclass(frozen=True)
class ChampionRef:
    name: str
    version: str
    run_id: str
    uri: str  # pinned models:/<name>/<version>, never the alias
    tracking_uri: str  # registry the workers load from (they do not inherit the driver's mlflow state)


@dataclass(frozen=True)
class ScoreReport:
    ds: dt.date
    rows: int
    model_name: str
    model_version: str
    model_run_id: str
    path: Path
    pipeline_run_id: str
    model_loads: int  # pyfunc loads across all Python workers (one per worker process)
    workers: int  # distinct Python worker processes that scored rows
    batches: int  # model.predict calls
    new_texts: int = 0  # vectors of texts first seen after the model's training, handed to it (text models)


def role_alias(cfg: PipelineConfig, role: ScoringRole) -> str:
    """The registry alias whose version scores for ``role``."""
    from tasks.registry import CHALLENGER_ALIAS

    return cfg.mlflow.champion_alias if role == "champion" else CHALLENGER_ALIAS


def resolve_champion(cfg: PipelineConfig, alias: str | None = None) -> ChampionRef:
    """Resolve the champion alias (or ``alias``) once, on the driver, to a concrete registered version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = cfg.mlflow.resolved_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name, alias = cfg.mlflow.model_name, alias or cfg.mlflow.champion_alias
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        raise ScoringError(
            f"no model version holds alias @{alias} of registered model {name!r} in {uri} "
            f"({e.error_code}); run the training DAG (train + gate) first"
        ) from None
    return ChampionRef(
        name=name, version=str(mv.version), run_id=mv.run_id, uri=f"models:/{name}/{mv.version}", tracking_uri=uri
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_champion(cfg: PipelineConfig, ref: ChampionRef) -> None:
    """Load the pinned champion once on the driver; a missing or truncated artifact raises
    ``ChampionArtifactError`` naming the version and the problem, before any worker tries."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from tasks.registry import mlflow_store

    what = f"model {ref.name} version {ref.version} (alias {cfg.mlflow.champion_alias})"
    try:
        with mlflow_store(cfg):
            mlflow.pyfunc.load_model(ref.uri)
    except (MlflowException, ConnectionError):
        raise  # the registry or artifact store did not answer: transient, so a retry may succeed
    except FileNotFoundError as e:
        missing = Path(e.filename).name if e.filename else _first_line(e)
        raise ChampionArtifactError(f"{what}: artifact file {missing} is missing") from None
    except Exception as e:  # any failure to load is the same verdict: the artifacts are broken
        raise ChampionArtifactError(f"{what}: artifacts do not load ({type(e).__name__}: {_first_line(e)})") from None


# Per Python worker: (registry, URI) -> loaded pyfunc. Spark reuses workers across tasks, so this is one
# load per worker; the registry is part of the key because models:/<name>/<v> is only unique within one.
_MODEL_CACHE: dict[tuple[str, str], Any] = {}


def _load_model(uri: str, tracking_uri: str, torch_threads: int) -> tuple[Any, bool]:
    """The cached pyfunc for ``uri`` and whether this call loaded it."""
    key = (tracking_uri, uri)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key], False
    import mlflow
    import torch

    torch.set_num_threads(torch_threads)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    _MODEL_CACHE[key] = mlflow.pyfunc.load_model(uri)
    return _MODEL_CACHE[key], True


def add_texts(model: Any, texts: list[str], vectors: np.ndarray) -> int:
    """Hand a pyfunc of this project that reads text the vectors of texts it has none of; 0 for any other."""
    from mlflow.exceptions import MlflowException

    try:
        predictor = getattr(model.unwrap_python_model(), "predictor", None)
    except (AttributeError, MlflowException):
        return 0
    add = getattr(predictor, "add_texts", None)
    return add(texts, vectors) if add is not None and texts else 0


def new_text_vectors(cfg: PipelineConfig, meta: dict[str, Any], ds: dt.date) -> tuple[list[str], np.ndarray] | None:
    """(texts, vectors [n, dim]) that the nightly text step encoded after the model's training (text-embedding
    partitions of its encoder for the days after its ``text_through``, before ``ds``; ``meta``: the packaged
    model's MLflow metadata): the queries and category codes first seen since, which the model reads instead of
    counting as no text. None for a model without text."""
    from tasks.models.text_encoder import read_text_vectors

    encoder, through = meta.get("text_encoder"), meta.get("text_through")
    if not encoder or not through:
        return None
    root = text_embeddings_root(cfg, encoder)
    files = [
        f
        for p in sorted(root.glob(f"{DAY_KEY}=*"))
        if (day := partition_day(p.name, DAY_KEY)) is not None and dt.date.fromisoformat(through) < day < ds
        for f in sorted(p.glob("*.parquet"))
    ]
    return read_text_vectors(files)


def model_predictor(model: Any) -> tuple[Callable[[pd.DataFrame, dict[str, Any]], pd.DataFrame], bool]:
    """``((rows, params) -> predictions, whether rows may carry Arrow-backed list columns)`` for a pyfunc.

    mlflow's ``PyFuncModel.predict`` re-checks every element of every array column against the
    signature, one pandas Series per row and column: most of a worker's time for the seq_* and
    candidate arrays. The job checks the Spark schema against the signature once, on the
    driver (``check_input_types``), so the project's own pyfunc (recognised by its packaged predictor) is
    called directly, and reads list columns straight from their Arrow buffers; any other pyfunc goes
    through mlflow's checked predict with plain pandas rows.
    """
    from mlflow.exceptions import MlflowException

    try:
        inner = model.unwrap_python_model()
    except (AttributeError, MlflowException):  # not a PythonModel-based pyfunc
        inner = None
    if inner is not None and getattr(inner, "predictor", None) is not None and hasattr(inner, "predict"):
        return (lambda rows, params: inner.predict(None, rows, params=params)), True
    return (lambda rows, params: model.predict(rows, params=params)), False


def arrow_to_pandas(batch: Any, arrow_lists: bool = True) -> pd.DataFrame:
    """A pyarrow RecordBatch/Table -> pandas; list columns stay Arrow-backed (``pd.ArrowDtype``) when
    ``arrow_lists``, so nothing builds a Python object per row and array (``tasks.models.encoding.ragged``)."""
    import pyarrow as pa

    def lists(t):
        return pd.ArrowDtype(t) if arrow_lists and (pa.types.is_list(t) or pa.types.is_large_list(t)) else None

    return batch.to_pandas(types_mapper=lists)


def _output_schema(with_candidates: bool, with_reasons: bool):
    """Arrow schema of the rows ``_score_partition`` yields (matches ``score_users``' Spark schema)."""
    import pyarrow as pa

    fields = [pa.field("user_id", pa.string(), nullable=False)]
    fields += [pa.field(c, pa.float64()) for c in PROBABILITY_COLUMNS]
    if with_candidates:
        fields.append(pa.field(TOP_CATEGORIES_COLUMN, pa.list_(pa.field("element", pa.string(), nullable=False))))
    if with_reasons:
        fields.append(pa.field(REASONS_COLUMN, pa.list_(pa.field("element", pa.string(), nullable=False))))
    return pa.schema(fields)


def _score_partition(
    batches: Iterator[Any],
    *,
    uri: str,
    tracking_uri: str,
    batch_size: int,
    torch_threads: int,
    reasons_top_k: int,
    top_k_categories: int,
    stats: Any,
    new_texts: Any = None,
) -> Iterator[Any]:
    """mapInArrow body: Arrow record batches of model inputs -> Arrow record batches of scores."""
    import pyarrow as pa

    model, loaded = _load_model(uri, tracking_uri, torch_threads)
    if new_texts is not None:
        # Every partition: the cached model of an earlier run in this worker may lack tonight's texts; a text it
        # has is skipped.
        add_texts(model, *new_texts.value)
    predict, arrow_lists = model_predictor(model)
    pid = os.getpid()
    stats.add({pid: (int(loaded), 0)})
    # The model computes reasons in the same pass as the probabilities when it supports the param.
    params = {"top_k_categories": top_k_categories, "reasons_top_k": reasons_top_k}
    for batch in batches:
        with_candidates = CANDIDATE_ARRAY_CATEGORY in batch.schema.names
        expected = [*PROBABILITY_COLUMNS, *([TOP_CATEGORIES_COLUMN] if with_candidates else [])]
        schema = _output_schema(with_candidates, bool(reasons_top_k))
        for start in range(0, batch.num_rows, batch_size):
            chunk = arrow_to_pandas(batch.slice(start, batch_size), arrow_lists)
            probs = predict(chunk, params)
            own_reasons = REASONS_COLUMN in probs.columns
            if [c for c in probs.columns if c != REASONS_COLUMN] != expected or len(probs) != len(chunk):
                raise ScoringError(
                    f"model {uri} returned columns {list(probs.columns)} x {len(probs)} rows for {len(chunk)} "
                    f"rows; the contract is {expected} in row order"
                )
            out = {"user_id": chunk["user_id"].astype(str).to_numpy(dtype=object)}
            for c in PROBABILITY_COLUMNS:
                out[c] = probs[c].to_numpy(dtype="float64")
            if with_candidates:
                out[TOP_CATEGORIES_COLUMN] = probs[TOP_CATEGORIES_COLUMN].to_numpy(dtype=object)
            if reasons_top_k:
                # A pyfunc that does not compute reasons in its predict pass gives none (null per row).
                out[REASONS_COLUMN] = (
                    probs[REASONS_COLUMN].to_numpy(dtype=object) if own_reasons else [None] * len(chunk)
                )
            stats.add({pid: (0, 1)})
            yield pa.RecordBatch.from_pydict(out, schema=schema)


def _merge_stats(a: dict[int, tuple[int, int]], b: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    out = dict(a)
    for pid, (loads, batches) in b.items():
        prev = out.get(pid, (0, 0))
        out[pid] = (prev[0] + loads, prev[1] + batches)
    return out


def _stats_accumulator(spark):
    from pyspark.accumulators import AccumulatorParam

    class _PerWorker(AccumulatorParam):
        def zero(self, value):
            return {}

        def addInPlace(self, value1, value2):
            return _merge_stats(value1, value2)

    return spark.sparkContext.accumulator({}, _PerWorker())


def candidate_columns(pair_columns: list[str] | None) -> list[str]:
    """The candidate arrays a champion ranking with ``pair_columns`` reads (none without a category head)."""
    if pair_columns is None:
        return []
    return [CANDIDATE_ARRAY_CATEGORY, *(CANDIDATE_ARRAY_PREFIX + c for c in pair_columns)]


def model_input_columns(features_columns: list[str]) -> list[str]:
    cand = [c for c in features_columns if c.startswith(CANDIDATE_ARRAY_PREFIX)]
    text = [SEQUENCE_TEXT_COLUMN] if SEQUENCE_TEXT_COLUMN in features_columns else []
    return ["user_id", *[c for c in features_columns if c.startswith(TABULAR_PREFIX)], *SEQUENCE_COLUMNS, *text, *cand]


def _join_candidates(spark, cfg: PipelineConfig, ds: dt.date, features, pair_columns: list[str]):
    """Features written without the candidate arrays the champion reads (by an earlier version of the
    features job): the arrays from ``features/user_category/ds=<ds>/``, packed and joined here."""
    from spark_jobs.features import attach_candidates

    cand_src = features_partition(cfg, "user_category", ds)
    if not cand_src.is_dir() or not any(cand_src.glob("*.parquet")):
        raise ScoringError(
            f"no candidate categories for ds={ds}: {cand_src} holds no Parquet files (run spark_jobs.features first)"
        )
    candidates = spark.read.parquet(str(cand_src))
    missing = [c for c in ("user_id", CANDIDATE_CATEGORY_COLUMN, *pair_columns) if c not in candidates.columns]
    if missing:
        raise ScoringError(f"user_category features lack columns {missing} that the champion needs")
    return attach_candidates(features.drop(*candidate_columns(pair_columns)), candidates, pair_columns)


def score_users(
    features,
    ref: ChampionRef,
    *,
    ds: dt.date,
    scored_at: dt.datetime,
    pipeline_run_id: str,
    batch_size: int,
    torch_threads: int,
    reasons_top_k: int = 0,
    top_k_categories: int = 5,
    stats: Any = None,
    new_texts: Any = None,
):
    """Features DataFrame (user_id, f_*, seq_*, optional cand_* arrays) -> one
    score row per feature row: SCORE_COLUMNS in order, plus ``top_categories`` when the features carry
    candidates and ``reasons`` when ``reasons_top_k`` > 0. ``stats``: optional accumulator of per-worker
    (loads, batches), see ``_stats_accumulator``. ``new_texts``: optional broadcast of (texts, vectors [n, dim])
    that a text model has no vector of (``new_text_vectors``)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if scored_at.tzinfo is None:
        raise ScoringError(f"scored_at must be time-zone aware, got {scored_at!r}")
    if batch_size <= 0 or torch_threads <= 0 or reasons_top_k < 0 or top_k_categories <= 0:
        raise ScoringError("batch_size, torch_threads and top_k_categories must be positive and reasons_top_k >= 0")
    missing = [c for c in ("user_id", *SEQUENCE_COLUMNS) if c not in features.columns]
    if missing:
        raise ScoringError(f"features lack columns {missing} (contract: docs/data-layers.md features layer)")
    fields = [T.StructField("user_id", T.StringType(), False)] + [
        T.StructField(c, T.DoubleType(), True) for c in PROBABILITY_COLUMNS
    ]
    with_candidates = CANDIDATE_ARRAY_CATEGORY in features.columns
    if with_candidates:
        fields.append(T.StructField(TOP_CATEGORIES_COLUMN, T.ArrayType(T.StringType(), False), True))
    if reasons_top_k:
        fields.append(T.StructField(REASONS_COLUMN, T.ArrayType(T.StringType(), False), True))
    if stats is None:
        stats = _stats_accumulator(features.sparkSession)
    fn = functools.partial(
        _score_partition,
        uri=ref.uri,
        tracking_uri=ref.tracking_uri,
        batch_size=batch_size,
        torch_threads=torch_threads,
        reasons_top_k=reasons_top_k,
        top_k_categories=top_k_categories,
        stats=stats,
        new_texts=new_texts,
    )
    scored = features.select(*model_input_columns(features.columns)).mapInArrow(fn, T.StructType(fields))
    constants = {
        "ds": F.lit(ds).cast("date"),
        "model_name": F.lit(ref.name),
        "model_version": F.lit(ref.version),
        "model_run_id": F.lit(ref.run_id),
        "scored_at": F.lit(scored_at.astimezone(dt.UTC)).cast("timestamp"),
        "pipeline_run_id": F.lit(pipeline_run_id),
    }
    cols = [constants[c].alias(c) if c in constants else F.col(c) for c in SCORE_COLUMNS]
    if with_candidates:
        cols.append(F.col(TOP_CATEGORIES_COLUMN))
    if reasons_top_k:
        cols.append(F.col(REASONS_COLUMN))
    return scored.select(*cols)


def _check_model_inputs(ref: ChampionRef, signature: Any, features_columns: list[str]) -> list[str] | None:
    """Fail on the driver, naming the columns, rather than deep inside a Python worker.

    Returns the pair feature columns the champion ranks candidates with (``signature``: its MLflow signature, or
    None), or None when its signature takes no candidates: a model without a category head leaves top_categories
    NULL.
    """
    if signature is None:
        return None
    names = signature.inputs.input_names()
    needed = [c for c in names if c not in SEQUENCE_COLUMNS and not c.startswith(CANDIDATE_ARRAY_PREFIX)]
    absent = [c for c in needed if c not in features_columns]
    if absent:
        raise ScoringError(f"champion {ref.uri} needs columns {absent} that the features partition lacks")
    if CANDIDATE_ARRAY_CATEGORY not in names:
        return None
    return [
        c[len(CANDIDATE_ARRAY_PREFIX) :]
        for c in names
        if c.startswith(CANDIDATE_ARRAY_PREFIX) and c not in (CANDIDATE_ARRAY_CATEGORY, CANDIDATE_ARRAY_TEXT)
    ]


def _spark_type_fits(expected: Any, actual: Any) -> bool:
    """Whether a Spark column type can be read as an mlflow signature type without loss (int -> long,
    integers and floats -> double), recursively for arrays."""
    from mlflow.types.schema import Array, DataType
    from pyspark.sql import types as T

    if isinstance(expected, Array):
        return isinstance(actual, T.ArrayType) and _spark_type_fits(expected.dtype, actual.elementType)
    integral = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
    accepted = {
        DataType.double: (*integral, T.FloatType, T.DoubleType),
        DataType.float: (*integral, T.FloatType),
        DataType.long: integral,
        DataType.integer: (T.ByteType, T.ShortType, T.IntegerType),
        DataType.string: (T.StringType,),
        DataType.boolean: (T.BooleanType,),
    }.get(expected)
    return accepted is not None and isinstance(actual, accepted)


def _type_name(t: Any) -> str:
    from mlflow.types.schema import Array

    return f"array<{_type_name(t.dtype)}>" if isinstance(t, Array) else getattr(t, "name", str(t))


def check_input_types(signature: Any, schema: Any, uri: str) -> None:
    """Every signature input present in the Spark ``schema`` has a compatible type: the one check that
    replaces mlflow's per-row enforcement (``model_predictor``); raises ScoringError naming each column."""
    fields = {f.name: f.dataType for f in schema.fields}
    wrong = [
        f"{spec.name} is {fields[spec.name].simpleString()}, model expects {_type_name(spec.type)}"
        for spec in signature.inputs.inputs
        if spec.name in fields and not _spark_type_fits(spec.type, fields[spec.name])
    ]
    if wrong:
        raise ScoringError(f"features do not match the input types of {uri}: " + "; ".join(wrong))


@contextlib.contextmanager
def _scoring_conf(spark, batch_rows: int) -> Iterator[None]:
    """Within the block, the session settings of the scoring stage (then the session's own are restored).

    Spark hands Python workers Arrow batches of ``batch_rows`` rows: at Spark's default of 10,000 a worker
    waits for the JVM to convert the first 10,000 rows before its first forward pass; at one model batch per
    Arrow batch the conversion of the next batch overlaps the model call on the current one (profiled: the
    workers' input wait shrinks severalfold). And adaptive execution does not coalesce the shuffle partitions
    of a candidate join (features written without candidate arrays, ``_join_candidates``): it sizes partitions
    by bytes, while a scoring task costs the model's work per row, so a few uneven coalesced partitions left a
    core idle while the last one scored (bench scoring_throughput); that stage runs one task per
    ``spark.sql.shuffle.partitions``. Without a join the stage runs one task per file split of the features.
    """
    settings = {
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_rows),
        "spark.sql.adaptive.coalescePartitions.enabled": "false",
    }
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def run(
    cfg: PipelineConfig, ds: dt.date, pipeline_run_id: str, spark=None, role: ScoringRole = "champion"
) -> ScoreReport | None:
    """Score every user of features/user/ds=<ds>/ (candidates from features/user_category/ds=<ds>/) with the
    champion; replace scores/ds=<ds>/. With ``role="challenger"``: with the version holding @challenger, into
    scores_shadow/ds=<ds>/; without one, that partition is removed and None returned."""
    from mlflow.models import get_model_info

    from spark_jobs.session import build_session
    from tasks.monitoring import shadow_needed
    from tasks.registry import mlflow_store

    if not pipeline_run_id:
        raise ScoringError("pipeline_run_id must be a non-empty string (the orchestrator's run id)")
    src = features_partition(cfg, "user", ds)
    if not src.is_dir() or not any(src.glob("*.parquet")):
        raise ScoringError(f"no features for ds={ds}: {src} holds no Parquet files (run spark_jobs.features first)")
    if role == "challenger" and not shadow_needed(cfg, ds):
        return None
    ref = resolve_champion(cfg, role_alias(cfg, role))
    check_champion(cfg, ref)
    spark = spark or build_session(cfg, f"score-{ds}")
    features = spark.read.parquet(str(src))
    with mlflow_store(cfg):
        info = get_model_info(ref.uri)
    signature = info.signature
    pair_columns = _check_model_inputs(ref, signature, features.columns)
    if not set(candidate_columns(pair_columns)) <= set(features.columns):
        features = _join_candidates(spark, cfg, ds, features, pair_columns or [])
    # Only the arrays the champion reads travel to the workers (none for a model without a category head; the
    # texts only to a model that reads text).
    reads_text = signature is not None and SEQUENCE_TEXT_COLUMN in signature.inputs.input_names()
    wanted = candidate_columns(pair_columns) + (
        [CANDIDATE_ARRAY_TEXT] if reads_text and pair_columns is not None else []
    )
    lacking = sorted(set(wanted) - set(features.columns))
    if lacking:
        raise ScoringError(f"champion {ref.uri} reads text; the features of ds={ds} lack {lacking} (text.enabled)")
    features = features.drop(*[c for c in features.columns if c.startswith(CANDIDATE_ARRAY_PREFIX) and c not in wanted])
    if not reads_text:
        features = features.drop(SEQUENCE_TEXT_COLUMN)
    if signature is not None:
        check_input_types(signature, features.schema, ref.uri)
    stats = _stats_accumulator(spark)
    found = new_text_vectors(cfg, info.metadata or {}, ds) if reads_text else None
    new_texts = spark.sparkContext.broadcast(found) if found is not None and found[0] else None
    scored_at = dt.datetime.combine(ds, dt.time(), tzinfo=cfg.pipeline.tz)
    scores = score_users(
        features,
        ref,
        ds=ds,
        scored_at=scored_at,
        pipeline_run_id=pipeline_run_id,
        batch_size=cfg.scoring.batch_size,
        torch_threads=cfg.scoring.torch_threads,
        reasons_top_k=cfg.scoring.reasons_top_k,
        top_k_categories=cfg.scoring.top_k_categories,
        stats=stats,
        new_texts=new_texts,
    )
    with _scoring_conf(spark, cfg.scoring.batch_size):
        (
            scores.write.mode("overwrite")
            .option("partitionOverwriteMode", "dynamic")
            .partitionBy(CUTOFF_KEY)
            .parquet(str(scores_root(cfg, role)))
        )
    out = scores_partition(cfg, ds, role)
    # Footer counts: the same check as two Spark counts, without their four jobs.
    rows = parquet_rows(out) or 0
    expected = parquet_rows(src) or 0
    if rows != expected:
        raise ScoringError(f"wrote {rows} score rows to {out} for {expected} feature rows")
    per_worker = stats.value
    return ScoreReport(
        ds=ds,
        rows=rows,
        model_name=ref.name,
        model_version=ref.version,
        model_run_id=ref.run_id,
        path=out,
        pipeline_run_id=pipeline_run_id,
        model_loads=sum(v[0] for v in per_worker.values()),
        workers=len(per_worker),
        batches=sum(v[1] for v in per_worker.values()),
        new_texts=len(found[0]) if found is not None else 0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(argparse.ArgumentParser(prog="spark_jobs.score", description=__doc__.splitlines()[0]))
    parser.add_argument("--ds", type=parse_ds, required=True, help="cutoff / logical date YYYY-MM-DD")
    parser.add_argument("--run-id", required=True, help="orchestrator run id stored with every score row")
    parser.add_argument(
        "--role",
        choices=SCORING_ROLES,
        default="champion",
        help="champion (default): @champion into scores/; challenger: @challenger into scores_shadow/ (the shadow)",
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    report = run(cfg, args.ds, args.run_id, role=args.role)
    if report is None:
        print(
            f"no version of {cfg.mlflow.model_name!r} holds @{role_alias(cfg, args.role)}: "
            "nothing to score in the shadow"
        )
        return 0
    print(
        f"scored {report.rows} users for ds={report.ds} with {report.model_name} v{report.model_version} "
        f"({report.model_loads} model loads in {report.workers} workers, {report.batches} batches) -> {report.path}"
    )
    return 0


if __name__ == "__main__":
    # Under spark-submit this file is __main__; go through the importable module so the worker-side
    # functions pickle by reference and share its model cache, not a by-value copy per task.
    from spark_jobs import score as _module

    raise SystemExit(run_cli(_module.main))
