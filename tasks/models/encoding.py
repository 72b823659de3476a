"""Feature encoder: turns feature-layer rows (pandas) into the model batch contract of ``tasks.models.base``.

Fitted on the train split only. Fitting is split into mergeable partial statistics so that each
DDP rank summarises just its own Parquet files and the ranks combine the sums; the fitted encoder
(category vocabulary, f_* imputation values, log flags, means/stds, L, item_buckets, and the same
statistics of the user x category pair features) travels with the packaged model as JSON so scoring
encodes exactly as training did.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tasks.schema import (
    CANDIDATE_CATEGORY_COLUMN,
    CANDIDATE_TEXT_COLUMN,
    EVENT_TYPES,
    LABEL_COLUMNS,
    SEQUENCE_COLUMNS,
    SEQUENCE_TEXT_COLUMN,
    USER_CATEGORY_LABEL,
)

PAD = 0
OOV = 1  # category index of a value not in the train vocabulary; text index of a text the model has no vector of
N_HOURS = 24
# Clip of standardised tabular values: heavy tails must not dominate the first layer.
TABULAR_CLIP = 10.0

# Feature-layer column -> batch key.
SEQUENCE_BATCH_KEYS = {
    "seq_event_type": "seq_event_type",
    "seq_category": "seq_category",
    "seq_item_bucket": "seq_item",
    "seq_gap_cutoff_bucket": "seq_gap_cutoff",
    "seq_gap_prev_bucket": "seq_gap_prev",
    "seq_hour": "seq_hour",
}
assert tuple(SEQUENCE_BATCH_KEYS) == SEQUENCE_COLUMNS


class EncodingError(ValueError):
    """Input rows violate the feature-layer contract the encoder was fitted for."""


def _unset() -> np.ndarray:
    # An empty array stands for "no rows seen yet"; __post_init__ sizes it to the feature columns.
    return np.empty(0)


@dataclass
class EncoderStats:
    """Partial statistics of some train rows; ``merge`` combines shards exactly."""

    feature_columns: list[str]
    n_rows: int = 0
    count: np.ndarray = field(default_factory=_unset)  # [F] non-null values
    total: np.ndarray = field(default_factory=_unset)  # [F] sum of raw values
    total_sq: np.ndarray = field(default_factory=_unset)
    log_total: np.ndarray = field(default_factory=_unset)  # [F] sum of log1p(max(x, 0))
    log_total_sq: np.ndarray = field(default_factory=_unset)
    minimum: np.ndarray = field(default_factory=_unset)  # [F]
    categories: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        f = len(self.feature_columns)
        for name in ("count", "total", "total_sq", "log_total", "log_total_sq"):
            if getattr(self, name).size == 0:
                setattr(self, name, np.zeros(f))
        if self.minimum.size == 0:
            self.minimum = np.full(f, np.inf)

    def merge(self, other: EncoderStats) -> EncoderStats:
        if other.feature_columns != self.feature_columns:
            raise EncodingError("cannot merge encoder statistics of different feature columns")
        return EncoderStats(
            feature_columns=self.feature_columns,
            n_rows=self.n_rows + other.n_rows,
            count=self.count + other.count,
            total=self.total + other.total,
            total_sq=self.total_sq + other.total_sq,
            log_total=self.log_total + other.log_total,
            log_total_sq=self.log_total_sq + other.log_total_sq,
            minimum=np.minimum(self.minimum, other.minimum),
            categories=self.categories + other.categories,
        )


def _require_columns(pdf: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in pdf.columns]
    if missing:
        raise EncodingError(f"input lacks {what} column(s): {', '.join(missing)}")


def _tabular_matrix(pdf: pd.DataFrame, columns: list[str]) -> np.ndarray:
    _require_columns(pdf, columns, "feature")
    out = np.empty((len(pdf), len(columns)), dtype=np.float64)
    for j, c in enumerate(columns):
        try:
            out[:, j] = pd.to_numeric(pdf[c], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
        except (ValueError, TypeError) as e:
            raise EncodingError(f"feature column {c!r} is not numeric: {e}") from None
    return out


def _scaling(stats: EncoderStats) -> dict[str, list]:
    """Imputation value, log flag, mean and std per column of merged statistics (shared by user and pair features)."""
    cnt = np.maximum(stats.count, 1.0)
    log_flag = stats.minimum >= 0
    s, s2 = np.where(log_flag, stats.log_total, stats.total), np.where(log_flag, stats.log_total_sq, stats.total_sq)
    mean = s / cnt
    var = np.maximum(s2 / cnt - mean**2, 0.0)
    std = np.sqrt(var)
    std = np.where(std < 1e-8, 1.0, std)  # constant columns pass through centred
    impute = np.where(log_flag, np.expm1(mean), mean)
    return {
        "impute": [float(v) for v in impute],
        "log": [bool(v) for v in log_flag],
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
    }


def _standardise(x: np.ndarray, impute, log_flag, means, stds) -> np.ndarray:
    """Raw [N, F] -> imputed, log1p where flagged, standardised and clipped float32 [N, F]."""
    x = np.where(np.isnan(x), np.asarray(impute, dtype=np.float64), x)
    log = np.asarray(log_flag, dtype=bool)
    x = np.where(log, np.log1p(np.maximum(x, 0.0)), x)
    x = (x - np.asarray(means, dtype=np.float64)) / np.asarray(stds, dtype=np.float64)
    return np.clip(x, -TABULAR_CLIP, TABULAR_CLIP).astype(np.float32)


def standardised(train: pd.DataFrame, frames: list[pd.DataFrame], columns: list[str]) -> list[np.ndarray]:
    """``columns`` of each of ``frames`` scaled as the encoder scales numeric features (imputed, log1p where the
    train column is non-negative, standardised and clipped) with statistics of ``train``: float64 [N, F] each."""
    sc = _scaling(FeatureEncoder.partial_tabular_stats(train, columns))
    return [
        _standardise(_tabular_matrix(f, columns), sc["impute"], sc["log"], sc["mean"], sc["std"]).astype(np.float64)
        for f in frames
    ]


def ragged(col: pd.Series, name: str, *, as_object: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A column of lists / numpy arrays / None -> (lengths [B], flat values); a null list has length 0.

    An Arrow-backed list column (``pd.ArrowDtype``, as the scoring job hands them in) is read from its
    offsets and flat child array without a Python object per row. Values stay objects for
    ``seq_category`` (or ``as_object``), numbers otherwise (a null number becomes NaN).
    """
    as_object = name == "seq_category" if as_object is None else as_object
    if isinstance(col.dtype, pd.ArrowDtype):
        import pyarrow as pa
        import pyarrow.compute as pc

        arr = pa.array(col)
        if isinstance(arr, pa.ChunkedArray):  # a column of a multi-batch table
            arr = arr.combine_chunks()
        if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
            raise EncodingError(f"sequence column {name!r} is {arr.type}, expected a list")
        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = arr.flatten()
        if as_object:
            return lengths, np.asarray(flat.to_numpy(zero_copy_only=False), dtype=object)
        if flat.null_count:
            flat = flat.cast(pa.float64())
        return lengths, flat.to_numpy(zero_copy_only=False)
    pieces = []
    for v in col:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            pieces.append(np.empty(0, dtype=object))
        elif isinstance(v, str | bytes):
            raise EncodingError(f"sequence column {name!r} holds a scalar string, expected a list")
        else:
            pieces.append(np.asarray(v, dtype=object) if as_object else np.asarray(v))
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    flat = np.concatenate(pieces) if pieces and lengths.sum() else np.empty(0, dtype=object)
    return lengths, flat


@dataclass(frozen=True)
class FeatureEncoder:
    feature_columns: list[str]
    impute_values: list[float]  # raw-space value that replaces a missing f_* value
    log_transform: list[bool]  # log1p before standardising (non-negative columns)
    means: list[float]  # of the (log-)transformed column
    stds: list[float]
    category_index: dict[str, int]  # raw category id -> index >= 2
    sequence_length: int
    item_buckets: int
    gap_buckets: int
    # The same statistics for the user x category pair features (f_uc_*) of the category head;
    # empty until ``with_pair_stats``.
    pair_feature_columns: list[str] = field(default_factory=list)
    pair_impute_values: list[float] = field(default_factory=list)
    pair_log_transform: list[bool] = field(default_factory=list)
    pair_means: list[float] = field(default_factory=list)
    pair_stds: list[float] = field(default_factory=list)
    # Normalised text -> row (>= 2) of the model's text-vector table (the training set's texts); empty: the
    # model reads no text. Row 0 is "no text", row 1 a text outside the table: both are zero vectors.
    text_index: dict[str, int] = field(default_factory=dict)
    text_dim: int = 0
    # The text-embedding layer's name of the encoder that made the vectors (spark_jobs.text_embeddings.encoder_key).
    text_encoder: str = ""
    # The last events day of the training set (ISO date): the texts first seen after it are new to the model.
    text_through: str = ""

    # ---- fitting -------------------------------------------------------------------------
    @staticmethod
    def partial_tabular_stats(pdf: pd.DataFrame, feature_columns: list[str]) -> EncoderStats:
        """Statistics of numeric columns only (the pair features of the candidate rows)."""
        x = _tabular_matrix(pdf, feature_columns)  # [N, F]
        present = ~np.isnan(x)
        x0 = np.where(present, x, 0.0)
        lx = np.log1p(np.maximum(x0, 0.0))
        return EncoderStats(
            feature_columns=list(feature_columns),
            n_rows=len(pdf),
            count=present.sum(axis=0).astype(np.float64),
            total=x0.sum(axis=0),
            total_sq=(x0**2).sum(axis=0),
            log_total=lx.sum(axis=0),
            log_total_sq=(lx**2).sum(axis=0),
            minimum=np.where(present, x, np.inf).min(axis=0) if len(pdf) else np.full(len(feature_columns), np.inf),
        )

    @staticmethod
    def partial_stats(pdf: pd.DataFrame, feature_columns: list[str]) -> EncoderStats:
        """Tabular statistics plus the category counts of the sequences (the user rows)."""
        _require_columns(pdf, ["seq_category"], "sequence")
        _, cats = ragged(pdf["seq_category"], "seq_category")
        return replace(
            FeatureEncoder.partial_tabular_stats(pdf, feature_columns),
            categories=Counter(str(c) for c in cats if c is not None),
        )

    @classmethod
    def from_stats(
        cls,
        stats: EncoderStats,
        *,
        sequence_length: int,
        item_buckets: int,
        gap_buckets: int = 32,
        max_categories: int = 10_000,
        category_min_count: int = 1,
    ) -> FeatureEncoder:
        if stats.n_rows == 0:
            raise EncodingError("cannot fit the encoder on an empty train split")
        sc = _scaling(stats)
        kept = [c for c, n in stats.categories.most_common() if n >= category_min_count][:max_categories]
        return cls(
            feature_columns=list(stats.feature_columns),
            impute_values=sc["impute"],
            log_transform=sc["log"],
            means=sc["mean"],
            stds=sc["std"],
            category_index={c: i + 2 for i, c in enumerate(sorted(kept))},
            sequence_length=int(sequence_length),
            item_buckets=int(item_buckets),
            gap_buckets=int(gap_buckets),
        )

    @classmethod
    def fit(cls, pdf: pd.DataFrame, feature_columns: list[str], **kwargs) -> FeatureEncoder:
        return cls.from_stats(cls.partial_stats(pdf, feature_columns), **kwargs)

    def with_pair_stats(self, stats: EncoderStats) -> FeatureEncoder:
        """A copy that also scales the pair features of ``stats`` (merged ``partial_tabular_stats``)."""
        if stats.n_rows == 0:
            raise EncodingError("cannot fit the pair features on zero train candidate rows")
        sc = _scaling(stats)
        return replace(
            self,
            pair_feature_columns=list(stats.feature_columns),
            pair_impute_values=sc["impute"],
            pair_log_transform=sc["log"],
            pair_means=sc["mean"],
            pair_stds=sc["std"],
        )

    def with_texts(self, texts: list[str], dim: int, encoder: str, through: str) -> FeatureEncoder:
        """A copy that reads the texts, ``texts`` being the rows (from 2) of the model's text-vector table of
        ``dim``-wide vectors made by ``encoder`` from events through the day ``through``."""
        if not texts or dim < 1:
            raise EncodingError(f"a text table needs texts and a width; got {len(texts)} texts of width {dim}")
        index = {t: i + 2 for i, t in enumerate(texts)}
        return replace(self, text_index=index, text_dim=int(dim), text_encoder=encoder, text_through=through)

    def with_more_texts(self, texts: list[str]) -> FeatureEncoder:
        """A copy whose table continues with ``texts`` (none of them in it yet) after its last row."""
        start = len(self.text_index) + 2
        return replace(self, text_index={**self.text_index, **{t: start + i for i, t in enumerate(texts)}})

    @property
    def text_sizes(self) -> dict[str, int]:
        """The model config's text_vocab and text_dim: zeros when the encoder reads no text."""
        if not self.text_index:
            return {"text_vocab": 0, "text_dim": 0}
        return {"text_vocab": len(self.text_index) + 2, "text_dim": self.text_dim}

    # ---- encoding ------------------------------------------------------------------------
    @property
    def vocab_sizes(self) -> dict[str, int]:
        """Embedding table sizes per batch key, padding index 0 included."""
        return {
            "seq_event_type": len(EVENT_TYPES) + 1,
            "seq_category": len(self.category_index) + 2,
            "seq_item": self.item_buckets + 1,
            "seq_gap_cutoff": self.gap_buckets + 1,
            "seq_gap_prev": self.gap_buckets + 1,
            "seq_hour": N_HOURS + 1,
        }

    def encode_tabular(self, pdf: pd.DataFrame) -> np.ndarray:
        x = _tabular_matrix(pdf, self.feature_columns)  # [B, F]
        return _standardise(x, self.impute_values, self.log_transform, self.means, self.stds)

    def encode_pair_tabular(self, cand: pd.DataFrame) -> np.ndarray:
        """Pair features of candidate rows -> imputed, log-scaled, standardised float32 [C, P]."""
        x = _tabular_matrix(cand, self.pair_feature_columns)  # [C, P]
        return _standardise(x, self.pair_impute_values, self.pair_log_transform, self.pair_means, self.pair_stds)

    def raw_tabular(self, pdf: pd.DataFrame, *, pair: bool = False) -> np.ndarray:
        """The f_* (or, with ``pair``, f_uc_*) columns as float64 [N, F], missing values NaN, unscaled."""
        return _tabular_matrix(pdf, self.pair_feature_columns if pair else self.feature_columns)

    def category_indices(self, categories) -> np.ndarray:
        """Raw category ids -> seq_category vocabulary indices, OOV for unseen or missing ones."""
        values = pd.Series(np.asarray(categories, dtype=object), dtype=object)
        idx = values.map(self.category_index)  # one hash lookup per value inside pandas, not a Python call
        miss = idx.isna().to_numpy() & values.notna().to_numpy()
        if miss.any():  # unseen ids, or ids that are not strings (e.g. ints), looked up by their string form
            idx[miss] = [self.category_index.get(str(c), OOV) for c in values[miss]]
        return idx.fillna(OOV).to_numpy(dtype=np.int64)

    def text_indices(self, texts) -> np.ndarray:
        """Normalised texts -> text-table rows: 0 for no text ("" or null), OOV for a text without a vector."""
        values = pd.Series(np.asarray(texts, dtype=object), dtype=object)
        present = (values.notna() & (values != "")).astype(float)
        return values.map(self.text_index).fillna(present).to_numpy(dtype=np.int64)

    def encode_candidates(
        self, rows: np.ndarray, cand: pd.DataFrame, *, with_labels: bool = False
    ) -> dict[str, Tensor]:
        """Candidate rows of a batch -> the cand_* keys of the batch contract (see tasks.models.base).

        ``rows`` [C]: the batch row of each candidate's user, -1 for a candidate whose user is not in
        the batch (dropped). ``cand`` holds category_id and the pair feature columns (and the label
        when ``with_labels``). The result is ordered by row (stable), which ``tasks.training.steps.take`` relies on.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) != len(cand):
            raise EncodingError(f"{len(rows)} candidate rows for {len(cand)} candidates")
        _require_columns(cand, [CANDIDATE_CATEGORY_COLUMN], "candidate")
        keep = np.flatnonzero(rows >= 0)
        keep = keep[np.argsort(rows[keep], kind="stable")]
        sub = cand.iloc[keep]
        out = {
            "cand_row": torch.from_numpy(rows[keep].copy()),
            "cand_category": torch.from_numpy(self.category_indices(sub[CANDIDATE_CATEGORY_COLUMN].tolist())),
            "cand_tabular": torch.from_numpy(self.encode_pair_tabular(sub)),
        }
        if self.text_index:
            _require_columns(cand, [CANDIDATE_TEXT_COLUMN], "candidate text")
            out["cand_text"] = torch.from_numpy(self.text_indices(sub[CANDIDATE_TEXT_COLUMN].tolist()))
        if with_labels:
            _require_columns(cand, [USER_CATEGORY_LABEL], "candidate label")
            y = sub[USER_CATEGORY_LABEL].to_numpy(dtype=np.float32, na_value=np.nan)
            if np.isnan(y).any() or not np.isin(y, (0.0, 1.0)).all():
                raise EncodingError(f"{USER_CATEGORY_LABEL} must hold 0/1 on every candidate row")
            out["cand_label"] = torch.from_numpy(y)
        return out

    def _field_values(self, name: str, flat: np.ndarray) -> np.ndarray:
        """Raw flat values of one sequence column -> vocabulary indices >= 1."""
        if name == "seq_category":
            return self.category_indices(flat)
        if flat.dtype.kind == "f" and not np.isfinite(flat).all():
            raise EncodingError(f"sequence column {name!r} holds null or non-finite values")
        try:
            v = flat.astype(np.int64)
        except (ValueError, TypeError) as e:
            raise EncodingError(f"sequence column {name!r} holds non-integer values: {e}") from None
        if name == "seq_event_type":
            lo, hi = 1, len(EVENT_TYPES)
        elif name == "seq_item_bucket":
            lo, hi = 1, self.item_buckets
        elif name == "seq_hour":
            lo, hi = 0, N_HOURS - 1
        else:
            # Gap buckets are log2 buckets starting at 0: shift past padding and cap the tail.
            return np.clip(v + 1, 1, self.gap_buckets)
        bad = (v < lo) | (v > hi)
        if bad.any():
            raise EncodingError(f"sequence column {name!r} has values outside {lo}..{hi}, e.g. {v[bad][:3].tolist()}")
        return v + 1 if name == "seq_hour" else v

    def encode(self, pdf: pd.DataFrame) -> dict[str, Tensor]:
        """Rows -> batch dict (see tasks.models.base); sequences keep their most recent L events."""
        keys = {**SEQUENCE_BATCH_KEYS, **({SEQUENCE_TEXT_COLUMN: "seq_text"} if self.text_index else {})}
        _require_columns(pdf, keys, "sequence")
        b, length = len(pdf), self.sequence_length
        batch: dict[str, Tensor] = {}
        lengths0: np.ndarray | None = None
        for col, key in keys.items():
            lengths, flat = ragged(pdf[col], col, as_object=col in ("seq_category", SEQUENCE_TEXT_COLUMN))
            if lengths0 is None:
                lengths0 = lengths
            elif not np.array_equal(lengths, lengths0):
                row = int(np.flatnonzero(lengths != lengths0)[0])
                raise EncodingError(f"row {row}: sequence column {col!r} length differs from seq_event_type")
            out = np.zeros((b, length), dtype=np.int64)  # [B, L], 0 = padding on the left
            if len(flat):
                values = self.text_indices(flat) if col == SEQUENCE_TEXT_COLUMN else self._field_values(col, flat)
                rows = np.repeat(np.arange(b), lengths)
                starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
                from_end = np.repeat(lengths, lengths) - (np.arange(len(flat)) - starts) - 1
                keep = from_end < length
                out[rows[keep], length - 1 - from_end[keep]] = values[keep]
            batch[key] = torch.from_numpy(out)
        assert lengths0 is not None, "SEQUENCE_BATCH_KEYS is never empty"
        n = np.minimum(lengths0, length)
        batch["seq_mask"] = torch.from_numpy(np.arange(length)[None, :] >= (length - n)[:, None])  # [B, L]
        batch["tabular"] = torch.from_numpy(self.encode_tabular(pdf))  # [B, F]
        return batch

    # ---- persistence ---------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureEncoder:
        try:
            data = json.loads(text)
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as e:
            raise EncodingError(f"not a FeatureEncoder JSON document: {e}") from None


def encode_targets(pdf: pd.DataFrame) -> tuple[Tensor, Tensor]:
    """Labels [B, 3] (INTENTS order) and row weights [B] of training rows; nulls are an error."""
    _require_columns(pdf, [*LABEL_COLUMNS, "weight"], "label")
    labels = pdf[list(LABEL_COLUMNS)]
    if labels.isna().any().any():
        bad = [c for c in LABEL_COLUMNS if pdf[c].isna().any()]
        raise EncodingError(f"training rows have null labels in {bad}")
    y = labels.to_numpy(dtype=np.float32)
    if not np.isin(y, (0.0, 1.0)).all():
        raise EncodingError("label columns must hold 0/1")
    w = pdf["weight"].to_numpy(dtype=np.float32, na_value=np.nan)
    if np.isnan(w).any() or (w < 0).any():
        raise EncodingError("weight must be a non-negative number on every row")
    return torch.from_numpy(y), torch.from_numpy(w)
