"""The training-set folder as training reads it: manifest contract, split files, candidate rows, validation gate.

Each process reads only its own Parquet files of every split (files ``rank::world``) and only the
user x category candidate rows of its own users (joined by (ds, user_id)).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from tasks import layers
from tasks.config import PipelineConfig
from tasks.errors import DataError
from tasks.schema import (
    CANDIDATE_CATEGORY_COLUMN,
    CANDIDATE_TEXT_COLUMN,
    SEQUENCE_COLUMNS,
    TABULAR_PREFIX,
    USER_CATEGORY_LABEL,
)
from tasks.validation_results import partition_fingerprint, read_result

SPLITS = ("train", "val", "test")
MANIFEST_KEYS = (
    "id",
    "cutoffs",
    "feature_columns",
    "sequence_columns",
    "sequence_length",
    "item_buckets",
    "user_category",
)
# Key joining candidate rows to user rows.
CANDIDATE_KEY = ("ds", "user_id")


class TrainingError(RuntimeError):
    """Training could not run or did not finish; the message names the cause."""


class UnvalidatedTrainingSetError(TrainingError, DataError):
    """The training set has no passing validation result for its current files; retrying will not help."""


def read_manifest(training_set_dir: Path) -> dict[str, Any]:
    """The manifest of a training-set folder, checked against the input contract."""
    path = layers.training_set_manifest(Path(training_set_dir))
    if not path.is_file():
        raise TrainingError(f"training set {training_set_dir} has no {path.name}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TrainingError(f"{path} is not valid JSON: {e}") from None
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise TrainingError(f"{path} lacks keys: {', '.join(missing)}")
    feats = manifest["feature_columns"]
    if not isinstance(feats, list) or any(not str(c).startswith(TABULAR_PREFIX) for c in feats):
        raise TrainingError(f"{path}: feature_columns must be a list of {TABULAR_PREFIX}* names, got {feats!r}")
    absent = set(SEQUENCE_COLUMNS) - set(manifest["sequence_columns"])
    if absent:
        raise TrainingError(f"{path}: sequence_columns lacks {sorted(absent)}")
    for split in SPLITS:
        if split not in manifest["cutoffs"]:
            raise TrainingError(f"{path}: cutoffs lacks the {split!r} split")
    uc = manifest["user_category"]
    if not isinstance(uc, dict) or not isinstance(uc.get("feature_columns"), list):
        raise TrainingError(f"{path}: user_category must be an object with a feature_columns list")
    if uc.get("label_column") != USER_CATEGORY_LABEL:
        raise TrainingError(f"{path}: user_category.label_column must be {USER_CATEGORY_LABEL!r}")
    return manifest


def split_files(training_set_dir: Path, split: str) -> list[Path]:
    files = sorted(layers.training_set_split(Path(training_set_dir), split).glob("*.parquet"))
    if not files:
        raise TrainingError(f"training set {training_set_dir} has no Parquet files in {split}/")
    return files


def read_files(files: list[Path], columns: list[str] | None = None) -> pd.DataFrame:
    import pyarrow.parquet as pq

    if not files:
        return pd.DataFrame(columns=columns or [])
    return pq.read_table([str(f) for f in files], columns=columns).to_pandas()


def require_validation(cfg: PipelineConfig, training_set_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The passing validation result of exactly these training-set files, or an error saying what is missing.

    ``spark_jobs.validate training_set`` stores it; a result for other files (the set was rebuilt after
    its validation) or a failed one does not count.
    """
    set_id = str(manifest["id"])
    path = layers.validation_result(cfg, "training_set", set_id)
    hint = (
        f"run `python -m spark_jobs.validate training_set --training-set-id {set_id}` first "
        "(or pass --allow-unvalidated for an ad-hoc run)"
    )
    result = read_result(path)
    if result is None:
        raise UnvalidatedTrainingSetError(f"training set {set_id!r} has no validation result at {path}; {hint}")
    if not result.get("success"):
        raise UnvalidatedTrainingSetError(
            f"training set {set_id!r} failed validation ({path}): {result.get('description', '')}"
        )
    if result.get("fingerprint") != partition_fingerprint(training_set_dir):
        raise UnvalidatedTrainingSetError(
            f"training set {set_id!r} at {training_set_dir} changed since its validation ({path}); {hint}"
        )
    return {**result, "path": str(path)}


def read_candidates(training_set_dir: Path, split: str, users: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The user_category rows of ``split`` whose (ds, user_id) is among ``users``.

    The candidate files are partitioned independently of the user files, so the filter (pushed down
    to the Parquet reader) keeps each rank to its own users' rows instead of the whole split.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    folder = layers.training_set_candidates(Path(training_set_dir), split)
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise TrainingError(f"training set {training_set_dir} has no Parquet files in user_category/{split}/")
    cols = [*CANDIDATE_KEY, CANDIDATE_CATEGORY_COLUMN, *columns]
    if users.empty:
        return pd.DataFrame(columns=cols)
    ds = pads.dataset([str(f) for f in files], format="parquet")
    missing = [c for c in cols if c not in ds.schema.names]
    if missing:
        raise TrainingError(f"{folder} lacks candidate columns {missing}")
    wanted = pc.field("user_id").isin(pa.array(users["user_id"].astype(str).unique()))
    table = ds.to_table(columns=cols, filter=wanted)
    cand = table.to_pandas()
    keys = users[list(CANDIDATE_KEY)].drop_duplicates()
    return cand.merge(keys, on=list(CANDIDATE_KEY), how="inner")


def split_categories(training_set_dir: Path, split: str) -> set[str]:
    """Every category id ``split`` mentions: in its users' event sequences and among their candidates."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    seq = pq.read_table([str(f) for f in split_files(training_set_dir, split)], columns=["seq_category"])
    cand_files = sorted(layers.training_set_candidates(Path(training_set_dir), split).glob("*.parquet"))
    ids = pc.unique(pc.list_flatten(seq.column("seq_category"))).to_pylist()
    if cand_files:
        cand = pq.read_table([str(f) for f in cand_files], columns=[CANDIDATE_CATEGORY_COLUMN])
        ids += pc.unique(cand.column(CANDIDATE_CATEGORY_COLUMN)).to_pylist()
    return {str(c) for c in ids if c is not None}


def reads_text(cfg: PipelineConfig, manifest: dict[str, Any]) -> bool:
    """Whether models trained on this set read text: ``text.enabled`` and a set built with texts (a source
    without any text, such as the Taobao export, gives a set with none)."""
    info = manifest.get("text")
    return bool(cfg.text.enabled and info and int(info.get("texts", 0)) > 0)


def candidate_columns(cfg: PipelineConfig, manifest: dict[str, Any]) -> list[str]:
    """The candidate columns training and evaluation read besides the keys: pair features, label, category text."""
    pair_feats = [str(c) for c in manifest["user_category"]["feature_columns"]]
    return [*pair_feats, USER_CATEGORY_LABEL, *([CANDIDATE_TEXT_COLUMN] if reads_text(cfg, manifest) else [])]


class TextTable(NamedTuple):
    texts: list[str]
    vectors: np.ndarray  # [len(texts), dim] float32
    encoder: str  # the text-embedding layer's name of the encoder that made them
    through: str  # the last events day the set read (ISO date): texts first seen later are new to its models


def read_texts(cfg: PipelineConfig, training_set_dir: Path, manifest: dict[str, Any]) -> TextTable | None:
    """The set's text table (spark_jobs.training_set); None when models of this set read no text
    (``reads_text``)."""
    from tasks.models.text_encoder import read_text_vectors

    if not reads_text(cfg, manifest):
        return None
    info = manifest["text"]
    folder = layers.training_set_texts(Path(training_set_dir))
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise TrainingError(
            f"training set {training_set_dir} has text in its manifest but no Parquet files in {folder}"
        )
    dim = int(info["dim"])
    try:
        texts, vectors = read_text_vectors(files)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    if len(texts) != int(info["texts"]) or vectors.size != len(texts) * dim or len(set(texts)) != len(texts):
        raise TrainingError(
            f"{folder} holds {len(texts)} texts ({vectors.size} values) where the manifest says {info['texts']} "
            f"distinct texts of {dim} values each"
        )
    return TextTable(texts, vectors, str(info["encoder"]), str(manifest["source"]["dt_last"]))


def candidate_rows(users: pd.DataFrame, cand: pd.DataFrame) -> np.ndarray:
    """Row of ``users`` (positional) that each candidate belongs to, by (ds, user_id); -1 if none."""
    index = pd.MultiIndex.from_frame(users[list(CANDIDATE_KEY)].astype(str))
    if not index.is_unique:
        raise TrainingError(f"user rows repeat a {CANDIDATE_KEY} key; candidates cannot be joined")
    return index.get_indexer(pd.MultiIndex.from_frame(cand[list(CANDIDATE_KEY)].astype(str))).astype(np.int64)


def training_set_dir_of(files: dict[str, list[Path]]) -> Path:
    """The training-set folder of the split files."""
    return files["train"][0].parent.parent
