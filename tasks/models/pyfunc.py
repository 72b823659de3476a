"""MLflow pyfunc packaging of an intent model: weights, encoder and architecture spec as artifacts.

The contract scoring relies on: ``mlflow.pyfunc.load_model(uri).predict(pdf)`` with ``user_id``, the
model's f_* columns and the seq_* columns (lists or numpy arrays) returns a DataFrame with
``tasks.schema.PROBABILITY_COLUMNS`` in the input's row order. The project code travels with the model
(``code_paths``), so the URI is all a consumer needs.
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
import torch
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

from tasks.config import REPO_ROOT
from tasks.models.base import IntentModel, build_model
from tasks.models.encoding import FeatureEncoder
from tasks.schema import PROBABILITY_COLUMNS, SEQUENCE_COLUMNS

# Rows per forward pass inside predict; bounds memory whatever batch the caller hands in.
PREDICT_CHUNK = 4096
_RUNTIME_PACKAGES = ("torch", "transformers", "numpy", "pandas", "pyarrow", "pydantic", "pyyaml", "scikit-learn")


class IntentPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the artifacts once per process; predict encodes with the packaged encoder."""

    def load_context(self, context) -> None:
        spec = json.loads(Path(context.artifacts["model_spec"]).read_text())
        self.model_type = spec["model_type"]
        self.encoder = FeatureEncoder.from_json(Path(context.artifacts["encoder"]).read_text())
        self.model = build_model(self.model_type, spec["model_config"])
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()

    def predict(self, context, model_input, params=None):
        if not isinstance(model_input, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(model_input).__name__}")
        parts = []
        for start in range(0, len(model_input), PREDICT_CHUNK):
            chunk = model_input.iloc[start : start + PREDICT_CHUNK]
            batch = self.encoder.encode(chunk)
            parts.append(self.model.predict(batch).numpy())  # [b, 3]
        probs = np.concatenate(parts) if parts else np.zeros((0, len(PROBABILITY_COLUMNS)))
        return pd.DataFrame(probs.astype(np.float64), columns=list(PROBABILITY_COLUMNS), index=model_input.index)


def signature_for(feature_columns: list[str]) -> ModelSignature:
    """Input: user_id, f_* doubles (NaN allowed), seq_* arrays; output: the probability columns.

    seq_* are declared optional only so that a null array (a user without events) passes mlflow's
    per-row check; a missing seq_* column is still rejected, by the encoder, with its name.
    """
    seq_types = {c: Array(DataType.string if c == "seq_category" else DataType.long) for c in SEQUENCE_COLUMNS}
    inputs = Schema(
        [ColSpec(DataType.string, "user_id")]
        + [ColSpec(DataType.double, c) for c in feature_columns]
        + [ColSpec(t, c, required=False) for c, t in seq_types.items()]
    )
    outputs = Schema([ColSpec(DataType.double, c) for c in PROBABILITY_COLUMNS])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements() -> list[str]:
    reqs = []
    for pkg in _RUNTIME_PACKAGES:
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def input_example(pdf: pd.DataFrame, feature_columns: list[str], n: int = 3) -> pd.DataFrame:
    """A few rows with exactly the signature's columns, arrays as plain lists."""
    cols = ["user_id", *feature_columns, *SEQUENCE_COLUMNS]
    ex = pdf[cols].head(n).copy()
    for c in SEQUENCE_COLUMNS:
        ex[c] = ex[c].map(lambda v: [] if v is None else list(np.asarray(v).tolist()))
    return ex.reset_index(drop=True)


def log_intent_model(
    model: IntentModel,
    encoder: FeatureEncoder,
    model_type: str,
    example: pd.DataFrame,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
    metadata: dict[str, Any] | None = None,
):
    """Log the packaged model to the active run (and register it); returns mlflow's ModelInfo."""
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmpdir / "weights.pt")
        (tmpdir / "encoder.json").write_text(encoder.to_json())
        spec = {"model_type": model_type, "model_config": model.cfg.to_dict()}
        (tmpdir / "model_spec.json").write_text(json.dumps(spec, sort_keys=True))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=IntentPyfunc(),
            artifacts={
                "weights": str(tmpdir / "weights.pt"),
                "encoder": str(tmpdir / "encoder.json"),
                "model_spec": str(tmpdir / "model_spec.json"),
            },
            code_paths=[str(REPO_ROOT / "tasks")],
            signature=signature_for(encoder.feature_columns),
            input_example=input_example(example, encoder.feature_columns),
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name,
            metadata=metadata,
        )
