"""Shared interface of every purchase-intent model: config dataclasses, batch contract, registry.

Batch contract (what ``tasks.models.encoding.FeatureEncoder.encode`` produces):
    seq_event_type, seq_category, seq_item, seq_gap_cutoff, seq_gap_prev, seq_hour: long [B, L],
        left-padded with 0 (index 0 is padding in every field vocabulary)
    seq_mask: bool [B, L], True on real events
    tabular: float [B, F], standardised f_* features
Every model maps a batch to logits [B, len(INTENTS)] in ``tasks.schema.INTENTS`` order, so
training, evaluation and scoring call the same three methods whatever the architecture.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tasks.schema import INTENTS

N_INTENTS = len(INTENTS)

# Batch keys of the sequence fields, in the order the embedding layer sums/concatenates them.
SEQUENCE_FIELDS = (
    "seq_event_type",
    "seq_category",
    "seq_item",
    "seq_gap_cutoff",
    "seq_gap_prev",
    "seq_hour",
)
BATCH_KEYS = (*SEQUENCE_FIELDS, "seq_mask", "tabular")


@dataclass(frozen=True)
class IntentModelConfig:
    """Sizes shared by every architecture; vocab sizes include the padding index 0."""

    vocab_sizes: dict[str, int]
    n_tabular: int
    sequence_length: int
    embedding_dim: int = 32
    hidden_dim: int = 64
    dropout: float = 0.1
    # "sum" adds the field embeddings; "concat" concatenates them and projects back to embedding_dim.
    field_fusion: str = "sum"
    # BCE positive-class weight per head (INTENTS order); 1.0 means no re-weighting.
    pos_weight: tuple[float, ...] = field(default_factory=lambda: (1.0,) * N_INTENTS)

    def __post_init__(self) -> None:
        missing = [f for f in SEQUENCE_FIELDS if f not in self.vocab_sizes]
        if missing:
            raise ValueError(f"vocab_sizes lacks sequence fields: {missing}")
        if any(v < 2 for v in self.vocab_sizes.values()):
            raise ValueError(f"every vocabulary needs padding plus at least one value: {self.vocab_sizes}")
        if self.field_fusion not in ("sum", "concat"):
            raise ValueError(f"field_fusion must be 'sum' or 'concat', not {self.field_fusion!r}")
        if len(self.pos_weight) != N_INTENTS or any(w <= 0 for w in self.pos_weight):
            raise ValueError(f"pos_weight needs {N_INTENTS} positive values, got {self.pos_weight}")
        if self.n_tabular < 0 or self.sequence_length < 1:
            raise ValueError("n_tabular must be >= 0 and sequence_length >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pos_weight"] = list(self.pos_weight)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntentModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        data = dict(data)
        if "pos_weight" in data:
            data["pos_weight"] = tuple(float(w) for w in data["pos_weight"])
        return cls(**data)


class FieldEmbedding(nn.Module):
    """One embedding table per sequence field, fused into one vector per position."""

    def __init__(self, cfg: IntentModelConfig):
        super().__init__()
        d = cfg.embedding_dim
        self.fusion = cfg.field_fusion
        self.tables = nn.ModuleDict(
            {name: nn.Embedding(cfg.vocab_sizes[name], d, padding_idx=0) for name in SEQUENCE_FIELDS}
        )
        self.project = nn.Linear(d * len(SEQUENCE_FIELDS), d) if self.fusion == "concat" else None
        self.norm = nn.LayerNorm(d)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        parts = [self.tables[name](batch[name]) for name in SEQUENCE_FIELDS]  # each [B, L, D]
        if self.project is None:
            x = torch.stack(parts, dim=0).sum(dim=0)  # [B, L, D]
        else:
            x = self.project(torch.cat(parts, dim=-1))  # [B, L, 6D] -> [B, L, D]
        # Zero padded positions so nothing downstream can read them by accident.
        return self.norm(x) * batch["seq_mask"].unsqueeze(-1)  # [B, L, D]


class IntentModel(nn.Module):
    """Base of all architectures: sequence encoder (subclass) + tabular MLP -> fused 3-head output."""

    config_class: ClassVar[type[IntentModelConfig]] = IntentModelConfig

    def __init__(self, cfg: IntentModelConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_dim
        self.embed = FieldEmbedding(cfg)
        self.tabular_mlp = (
            nn.Sequential(nn.Linear(cfg.n_tabular, h), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(h, h))
            if cfg.n_tabular > 0
            else None
        )
        fused = h * (2 if self.tabular_mlp is not None else 1)
        self.head = nn.Sequential(nn.Linear(fused, h), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(h, N_INTENTS))
        self.register_buffer("pos_weight", torch.tensor(cfg.pos_weight, dtype=torch.float32), persistent=False)

    def encode_sequence(self, batch: dict[str, Tensor]) -> Tensor:
        """Sequence representation [B, hidden_dim]; must ignore padded positions entirely."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        seq = self.encode_sequence(batch)  # [B, H]
        # A user without events has no sequence signal: zero it rather than trust a pad-only encoding.
        has_events = batch["seq_mask"].any(dim=1, keepdim=True).to(seq.dtype)  # [B, 1]
        parts = [seq * has_events]
        if self.tabular_mlp is not None:
            parts.append(self.tabular_mlp(batch["tabular"]))  # [B, H]
        return self.head(torch.cat(parts, dim=-1))  # [B, 3]

    def loss(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
        """Weighted BCE over the heads: logits/labels [B, 3], weight [B] -> scalar.

        Normalised by the row count, not the weight sum, so the mean over equal-sized DDP shards
        equals the loss of the whole global batch.
        """
        per = nn.functional.binary_cross_entropy_with_logits(
            logits.float(), labels.float(), pos_weight=self.pos_weight, reduction="none"
        )  # [B, 3]
        per_row = per.sum(dim=1)  # [B]
        if weight is not None:
            per_row = per_row * weight.float()
        return per_row.mean()

    @torch.no_grad()
    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        """Probabilities [B, 3] in eval mode (no dropout); restores the previous mode."""
        was_training = self.training
        self.eval()
        try:
            return torch.sigmoid(self.forward(batch).float())
        finally:
            self.train(was_training)


_REGISTRY: dict[str, type[IntentModel]] = {}


def register_model(name: str) -> Callable[[type[IntentModel]], type[IntentModel]]:
    def deco(cls: type[IntentModel]) -> type[IntentModel]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model type {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls

    return deco


def model_types() -> tuple[str, ...]:
    _load_architectures()
    return tuple(sorted(_REGISTRY))


def _load_architectures() -> None:
    # Importing the architecture modules registers them; done lazily so base.py has no cycle.
    from tasks.models import bert, lstm  # noqa: F401


def model_class(model_type: str) -> type[IntentModel]:
    _load_architectures()
    if model_type not in _REGISTRY:
        raise ValueError(f"unknown model type {model_type!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[model_type]


def build_model(model_type: str, config: IntentModelConfig | dict[str, Any]) -> IntentModel:
    """The one constructor used by training and scoring; ``config`` may be the dict from ``to_dict``."""
    cls = model_class(model_type)
    if isinstance(config, dict):
        config = cls.config_class.from_dict(config)
    if not isinstance(config, cls.config_class):
        raise TypeError(f"{model_type} needs a {cls.config_class.__name__}, got {type(config).__name__}")
    return cls(config)


def model_config(model_type: str, **values: Any) -> IntentModelConfig:
    """Config of ``model_type`` from keyword values; unknown keys are an error."""
    return model_class(model_type).config_class.from_dict(values)
