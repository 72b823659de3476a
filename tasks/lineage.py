"""What a training run consumed, recorded on its MLflow run: dataset inputs and the data-quality verdict.

Each split of the training set becomes an MLflow dataset input (``mlflow.log_input``): named by the
training-set id, sourced at the split's folder, with the manifest's cutoff range and row count as
profile and input tags, and the context ``train`` / ``validation`` / ``test``. Only metadata is
logged (an MLflow ``MetaDataset``), never the rows. The training set's stored GX validation result
(``tasks.validation_results``) and the path of its Data Docs are logged as artifacts beside it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from mlflow.data.meta_dataset import MetaDataset
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array

# Split folder -> MLflow input context.
SPLIT_CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
_TYPES = {"ds": DataType.string, "user_id": DataType.string, "weight": DataType.double}


class TrainingSetSplit(MetaDataset):
    """A metadata-only MLflow dataset with a profile (rows, cutoff range) taken from the manifest."""

    def __init__(self, source, name: str, digest: str, schema: Schema, profile: dict[str, Any]):
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def _source(folder: Path):
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        # The local-file source is registered for both "" and "file" schemes; either is the same class.
        warnings.simplefilter("ignore", UserWarning)
        return resolve_dataset_source(str(folder))


def _schema(manifest: dict[str, Any]) -> Schema:
    cols = [ColSpec(_TYPES.get(c, DataType.string), c) for c in manifest.get("key_columns", ["user_id", "ds"])]
    cols += [ColSpec(DataType.double, c) for c in manifest["feature_columns"]]
    # Sequence fields are lists of ids; only the category field holds strings.
    cols += [
        ColSpec(Array(DataType.string if c == "seq_category" else DataType.long), c)
        for c in manifest["sequence_columns"]
    ]
    cols += [ColSpec(DataType.long, c) for c in manifest.get("label_columns", [])]
    return Schema(cols)


def split_datasets(
    manifest: dict[str, Any], training_set_dir: Path, fingerprint: str
) -> list[tuple[str, TrainingSetSplit, dict[str, str]]]:
    """(context, dataset, input tags) per split; the digest changes whenever the split's files do."""
    out = []
    rows = manifest.get("rows", {})
    for split, context in SPLIT_CONTEXTS.items():
        cutoffs = sorted(manifest["cutoffs"][split])
        profile = {
            "split": split,
            "cutoff_first": cutoffs[0] if cutoffs else None,
            "cutoff_last": cutoffs[-1] if cutoffs else None,
            "n_cutoffs": len(cutoffs),
            "rows": rows.get(split),
        }
        dataset = TrainingSetSplit(
            _source(Path(training_set_dir) / split),
            name=str(manifest["id"]),
            digest=f"{split}-{fingerprint[:12]}",
            schema=_schema(manifest),
            profile=profile,
        )
        tags = {"split": split, **{k: str(v) for k, v in profile.items() if k != "split" and v is not None}}
        out.append((context, dataset, tags))
    return out


def log_training_set_lineage(
    manifest: dict[str, Any], training_set_dir: Path, fingerprint: str, validation: dict[str, Any] | None
) -> None:
    """Log the splits as dataset inputs and the validation result (or that there was none) to the active run."""
    import mlflow

    for context, dataset, tags in split_datasets(manifest, training_set_dir, fingerprint):
        mlflow.log_input(dataset, context=context, tags=tags)
    if validation is None:
        # Only reachable with an explicit --allow-unvalidated / training.require_validation: false.
        mlflow.set_tag("training_set_validation", "not checked")
        return
    mlflow.set_tag("training_set_validation", "passed")
    mlflow.log_dict(validation, "training_set/validation_result.json")
    docs = (validation.get("summary") or {}).get("data_docs")
    if docs:
        mlflow.set_tag("training_set_data_docs", docs)
        mlflow.log_text(f"{docs}\n", "training_set/data_docs_path.txt")
