"""MLflow pyfunc packaging of an intent model of any family: the family's artifacts (weights or fitted
classifiers, the encoder) and a spec naming the family, which loads them back as a ``Predictor``.

The contract scoring relies on: ``mlflow.pyfunc.load_model(uri).predict(pdf)`` with ``user_id``, the
model's f_* columns and the seq_* columns (lists or numpy arrays) returns a DataFrame with
``tasks.schema.PROBABILITY_COLUMNS`` in the input's row order. When the input also carries the user's
candidate categories as parallel arrays (``cand_category_id`` and ``cand_<f_uc_*>``, see
``tasks.schema.CANDIDATE_ARRAY_PREFIX``), the output adds ``top_categories``: the ``top_k_categories``
(a predict param) most likely categories as "<category_id>:<probability>", best first (None for a user
without candidates). With the predict param ``reasons_top_k`` > 0 it also adds ``reasons``: the f_*
features that most raise the purchase logit (gradient x input for a sequence model, coefficient x value
for logistic regression, LightGBM's per-row contributions), computed in the same pass as the probabilities.
The project code travels with the model (``code_paths``), so the URI is all a consumer needs.
"""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

from tasks.config import REPO_ROOT
from tasks.models.base import Predictor, model_class
from tasks.models.ensemble import load_predictor
from tasks.schema import (
    CANDIDATE_ARRAY_CATEGORY,
    CANDIDATE_ARRAY_PREFIX,
    CANDIDATE_ARRAY_TEXT,
    CANDIDATE_CATEGORY_COLUMN,
    CANDIDATE_TEXT_COLUMN,
    PROBABILITY_COLUMNS,
    REASONS_COLUMN,
    SEQUENCE_COLUMNS,
    SEQUENCE_TEXT_COLUMN,
    TOP_CATEGORIES_COLUMN,
)

# Artifact path of the packaged model inside its training run (runs:/<run_id>/model).
MODEL_ARTIFACT = "model"
# Rows per forward pass inside predict; bounds memory whatever batch the caller hands in.
PREDICT_CHUNK = 4096
# Default of the top_k_categories predict param (scoring passes scoring.top_k_categories).
DEFAULT_TOP_K_CATEGORIES = 5
_RUNTIME_PACKAGES = (
    "torch",
    "transformers",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "pyyaml",
    "scikit-learn",
    "lightgbm",
)


class IntentPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the family's ``Predictor`` once per process; predict hands it chunks of rows."""

    def load_context(self, context) -> None:
        spec = json.loads(Path(context.artifacts["model_spec"]).read_text())
        self.model_type = spec["model_type"]
        self.predictor = load_predictor(spec, context.artifacts)

    def predict(self, context, model_input, params=None):
        return predict_frame(self.predictor, model_input, params)


def predict_frame(
    predictor: Predictor, model_input: pd.DataFrame, params: dict[str, Any] | None = None
) -> pd.DataFrame:
    """The pyfunc contract (module doc) over any ``Predictor``, ``PREDICT_CHUNK`` rows per call."""
    if not isinstance(model_input, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(model_input).__name__}")
    top_k = int((params or {}).get("top_k_categories", DEFAULT_TOP_K_CATEGORIES))
    reasons_k = int((params or {}).get("reasons_top_k", 0))
    with_candidates = CANDIDATE_ARRAY_CATEGORY in model_input.columns
    parts, tops, reasons = [], [], []
    for start in range(0, len(model_input), PREDICT_CHUNK):
        chunk = model_input.iloc[start : start + PREDICT_CHUNK]
        rows = cand = None
        if with_candidates:
            rows, cand = explode_candidates(chunk, predictor.pair_feature_columns)
        out = predictor.predict_chunk(chunk, rows, cand, reasons_k)
        if out.reasons is not None:
            reasons.extend(out.reasons)
        if rows is not None and cand is not None:
            cats = cand[CANDIDATE_CATEGORY_COLUMN].to_numpy(dtype=object)
            tops.extend(top_categories(rows, cats, out.category, len(chunk), top_k))
        parts.append(out.intent)  # [b, 3]
    probs = np.concatenate(parts) if parts else np.zeros((0, len(PROBABILITY_COLUMNS)))
    result = pd.DataFrame(probs.astype(np.float64), columns=list(PROBABILITY_COLUMNS), index=model_input.index)
    if with_candidates:
        result[TOP_CATEGORIES_COLUMN] = pd.Series(tops, index=model_input.index, dtype=object)
    if reasons_k:
        result[REASONS_COLUMN] = pd.Series(reasons, index=model_input.index, dtype=object)
    return result


def explode_candidates(pdf: pd.DataFrame, pair_columns: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Parallel candidate arrays on user rows -> (user row [C], one row per candidate), rows ascending.

    A null cand_category_id means no candidates; every cand_<f> array of a row must match its length.
    """
    from tasks.models.encoding import EncodingError, ragged

    names = [CANDIDATE_ARRAY_CATEGORY, *(CANDIDATE_ARRAY_PREFIX + c for c in pair_columns)]
    texts = [CANDIDATE_ARRAY_TEXT] if CANDIDATE_ARRAY_TEXT in pdf.columns else []
    missing = [c for c in names if c not in pdf.columns]
    if missing:
        raise EncodingError(f"input has {CANDIDATE_ARRAY_CATEGORY} but lacks candidate column(s) {missing}")
    lengths, flat = ragged(pdf[names[0]], names[0], as_object=True)
    out = {CANDIDATE_CATEGORY_COLUMN: flat}
    for col, name in zip(pair_columns, names[1:], strict=True):
        col_lengths, values = ragged(pdf[name], name, as_object=False)
        bad = np.flatnonzero(col_lengths != lengths)
        if len(bad):
            raise EncodingError(f"row {int(bad[0])}: {name} length differs from {CANDIDATE_ARRAY_CATEGORY}")
        if values.dtype == object:  # plain lists: a null pair feature is NaN, imputed by the encoder
            values = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
        out[col] = values.astype(np.float64, copy=False)
    for name in texts:
        col_lengths, values = ragged(pdf[name], name, as_object=True)
        bad = np.flatnonzero(col_lengths != lengths)
        if len(bad):
            raise EncodingError(f"row {int(bad[0])}: {name} length differs from {CANDIDATE_ARRAY_CATEGORY}")
        out[CANDIDATE_TEXT_COLUMN] = values
    rows = np.repeat(np.arange(len(pdf)), lengths)
    return rows, pd.DataFrame(out)


def top_categories(
    rows: np.ndarray, categories: np.ndarray, probs: np.ndarray, n_rows: int, k: int
) -> list[list[str] | None]:
    """Per user row, its k most likely candidates as "<category_id>:<probability>" (best first; ties keep
    input order); None for a row without candidates. rows/categories/probs [C], rows ascending."""
    out: list[list[str] | None] = [None] * n_rows
    order = np.lexsort((np.arange(len(probs)), -probs, rows))
    starts = np.searchsorted(rows[order], np.arange(n_rows))
    ends = np.searchsorted(rows[order], np.arange(n_rows), side="right")
    for i in np.flatnonzero(ends > starts):
        top = order[starts[i] : min(ends[i], starts[i] + k)]
        out[i] = [f"{categories[j]}:{probs[j]:.4f}" for j in top]
    return out


def signature_for(
    feature_columns: list[str], pair_columns: list[str] | None = None, text: bool = False
) -> ModelSignature:
    """Input: user_id, f_* doubles (NaN allowed), seq_* arrays (with ``text``, seq_text too), optional candidate
    arrays (with ``text``, cand_category_text too); output: the probability columns, top_categories and
    reasons; params top_k_categories and reasons_top_k.

    seq_* are declared optional only so that a null array (a user without events) passes mlflow's
    per-row check; a missing seq_* column is still rejected, by the encoder, with its name. The
    candidate arrays are optional because user-level consumers (the gate) score without them.
    """
    seq_types = {c: Array(DataType.string if c == "seq_category" else DataType.long) for c in SEQUENCE_COLUMNS}
    cand = [ColSpec(Array(DataType.string), CANDIDATE_ARRAY_CATEGORY, required=False)] + [
        ColSpec(Array(DataType.double), CANDIDATE_ARRAY_PREFIX + c, required=False) for c in pair_columns or []
    ]
    if text:
        seq_types[SEQUENCE_TEXT_COLUMN] = Array(DataType.string)
        cand.append(ColSpec(Array(DataType.string), CANDIDATE_ARRAY_TEXT, required=False))
    inputs = Schema(
        [ColSpec(DataType.string, "user_id")]
        + [ColSpec(DataType.double, c) for c in feature_columns]
        + [ColSpec(t, c, required=False) for c, t in seq_types.items()]
        + cand
    )
    outputs = Schema(
        [ColSpec(DataType.double, c) for c in PROBABILITY_COLUMNS]
        + [ColSpec(Array(DataType.string), TOP_CATEGORIES_COLUMN, required=False)]
        + [ColSpec(Array(DataType.string), REASONS_COLUMN, required=False)]
    )
    params = ParamSchema(
        [
            ParamSpec("top_k_categories", DataType.long, DEFAULT_TOP_K_CATEGORIES),
            ParamSpec("reasons_top_k", DataType.long, 0),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def pip_requirements() -> list[str]:
    reqs = []
    for pkg in _RUNTIME_PACKAGES:
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def input_example(pdf: pd.DataFrame, feature_columns: list[str], n: int = 3, text: bool = False) -> pd.DataFrame:
    """A few rows with exactly the signature's columns, arrays as plain lists."""
    sequences = [*SEQUENCE_COLUMNS, *([SEQUENCE_TEXT_COLUMN] if text else [])]
    cols = ["user_id", *feature_columns, *sequences]
    ex = pdf[cols].head(n).copy()
    for c in sequences:
        ex[c] = ex[c].map(lambda v: [] if v is None else list(np.asarray(v).tolist()))
    return ex.reset_index(drop=True)


def log_intent_model(
    predictor: Predictor,
    example: pd.DataFrame,
    *,
    name: str = MODEL_ARTIFACT,
    registered_model_name: str | None = None,
    metadata: dict[str, Any] | None = None,
):
    """Log the packaged model to the active run (and register it); returns mlflow's ModelInfo."""
    reads_text = bool(getattr(predictor, "reads_text", False))
    if reads_text:
        # Scoring looks up the texts first seen after text_through in this encoder's layer (spark_jobs.score).
        metadata = {
            **(metadata or {}),
            "text_encoder": getattr(predictor, "text_encoder", ""),
            "text_through": getattr(predictor, "text_through", ""),
        }
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        artifacts = predictor.save(tmpdir)
        (tmpdir / "model_spec.json").write_text(json.dumps(predictor.spec(), sort_keys=True))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=IntentPyfunc(),
            artifacts={**artifacts, "model_spec": str(tmpdir / "model_spec.json")},
            code_paths=[str(REPO_ROOT / "tasks")],
            signature=signature_for(predictor.feature_columns, predictor.pair_feature_columns, reads_text),
            input_example=input_example(example, predictor.feature_columns, text=reads_text),
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name,
            metadata=metadata,
        )


class EncoderPyfunc(mlflow.pyfunc.PythonModel):
    """A pretrained behaviour encoder (tasks.pretrain): seq_* columns in, each row's sequence representation
    (``IntentModel.sequence_features``, [H] floats) out as the ``embedding`` column."""

    def load_context(self, context) -> None:
        spec = json.loads(Path(context.artifacts["model_spec"]).read_text())
        self.predictor = model_class(spec["model_type"]).from_artifacts(spec, context.artifacts)

    def predict(self, context, model_input, params=None):
        import torch

        batch = self.predictor.encoder.encode(model_input)
        with torch.no_grad():
            rep = self.predictor.model.eval().sequence_features(batch)  # [B, H]
        return pd.DataFrame({"embedding": list(rep.numpy())})


def log_encoder_model(predictor: Predictor, example: pd.DataFrame, *, name: str, registered_model_name: str, metadata):
    """Log a pretrained encoder (a ``TorchPredictor`` without user heads worth using) to the active run and
    register it; returns mlflow's ModelInfo."""
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        artifacts = predictor.save(tmpdir)
        (tmpdir / "model_spec.json").write_text(json.dumps(predictor.spec(), sort_keys=True))
        sequences = [*SEQUENCE_COLUMNS, *([SEQUENCE_TEXT_COLUMN] if getattr(predictor, "reads_text", False) else [])]
        ex = example[sequences].head(3).copy()
        for c in sequences:
            ex[c] = ex[c].map(lambda v: [] if v is None else list(np.asarray(v).tolist()))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=EncoderPyfunc(),
            artifacts={**artifacts, "model_spec": str(tmpdir / "model_spec.json")},
            code_paths=[str(REPO_ROOT / "tasks")],
            input_example=ex.reset_index(drop=True),
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name,
            metadata=metadata,
        )


def load_encoder(uri: str):
    """The ``TorchPredictor`` (model and feature encoder) of a registered pretrained encoder."""
    predictor, whole = load_start(uri)
    if whole:
        raise ValueError(f"{uri} is not a pretrained behaviour encoder (tasks.pretrain) but an intent model")
    return predictor


def load_start(uri: str) -> tuple[Any, bool]:
    """What a training can start from, and whether it is a whole trained model: a registered pretrained encoder
    (tasks.pretrain; its ``TorchPredictor`` holds the sequence encoder, False), or a registered intent model such
    as the champion (True; a weekly retrain warm-starting from it), unwrapped to its first seed before calibration:
    a ``TorchPredictor`` for a torchrun family, another ``Predictor`` (whose ``model_type`` names it) else."""
    from tasks.models.calibration import CalibratedPredictor
    from tasks.models.ensemble import SeedEnsemble

    wrapper = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    if isinstance(wrapper, EncoderPyfunc):
        return wrapper.predictor, False
    if not isinstance(wrapper, IntentPyfunc):
        raise ValueError(f"{uri} is neither a pretrained encoder nor an intent model but a {type(wrapper).__name__}")
    predictor = wrapper.predictor
    while isinstance(predictor, SeedEnsemble | CalibratedPredictor):
        predictor = predictor.members[0] if isinstance(predictor, SeedEnsemble) else predictor.inner
    return predictor, True
