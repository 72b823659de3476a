"""Model construction settings: positive weights, the model config of any family, the learning-rate schedule.

A model config is the shared sizes (``training`` and the encoder) merged with the family's own settings
(its ``models.<name>`` section); nothing here knows which families exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tasks.config import ConfigError, PipelineConfig
from tasks.models.base import SEQUENCE_FIELDS, IntentModelConfig, family_settings, model_class, model_config
from tasks.models.encoding import FeatureEncoder
from tasks.schema import INTENTS


def positive_weights(
    cfg: PipelineConfig, positives: np.ndarray, rows: int, heads: int = len(INTENTS)
) -> tuple[float, ...]:
    """Per-head BCE positive weight: negatives/positives of the train split, capped (or 1 when off)."""
    if cfg.training.positive_weighting == "none":
        return (1.0,) * heads
    pos = np.asarray(positives, dtype=np.float64)
    ratio = np.where(pos > 0, (rows - pos) / np.maximum(pos, 1.0), cfg.training.max_pos_weight)
    return tuple(float(v) for v in np.clip(ratio, 1.0, cfg.training.max_pos_weight))


def _model_config(cfg: PipelineConfig, model_type: str, **sizes: object) -> IntentModelConfig:
    t = cfg.training
    common = dict(
        embedding_dim=t.embedding_dim,
        hidden_dim=t.hidden_dim,
        dropout=t.dropout,
        field_fusion=t.field_fusion,
        category_loss_weight=t.category_loss_weight,
        **sizes,
    )
    return model_config(model_type, **common, **family_settings(model_type, cfg.models.get(model_type, {})))


def build_model_config(
    cfg: PipelineConfig,
    model_type: str,
    encoder: FeatureEncoder,
    pos_weight: tuple[float, ...],
    category_pos_weight: float = 1.0,
) -> IntentModelConfig:
    """Config of a ``model_type`` model trained on what ``encoder`` encodes."""
    return _model_config(
        cfg,
        model_type,
        vocab_sizes=encoder.vocab_sizes,
        n_tabular=len(encoder.feature_columns),
        sequence_length=encoder.sequence_length,
        pos_weight=pos_weight,
        n_pair_tabular=len(encoder.pair_feature_columns),
        category_pos_weight=category_pos_weight,
        **encoder.text_sizes,
    )


def encoder_settings(cfg: PipelineConfig, manifest: dict) -> dict[str, int]:
    """The ``FeatureEncoder.from_stats`` / ``fit`` sizes of a training set (its manifest) under ``cfg``."""
    t = cfg.training
    return {
        "sequence_length": int(manifest["sequence_length"]),
        "item_buckets": int(manifest["item_buckets"]),
        "gap_buckets": t.gap_buckets,
        "max_categories": t.max_categories,
        "category_min_count": t.category_min_count,
    }


def check_model_settings(cfg: PipelineConfig, model_type: str, sequence_length: int) -> None:
    """Fail before any process starts when ``models.<model_type>`` or its combination with ``training`` is
    invalid; the vocabularies are placeholders (the encoder fixes them from the data)."""
    try:
        if model_class(model_type).shared_config is IntentModelConfig:
            _model_config(
                cfg,
                model_type,
                vocab_sizes={f: 2 for f in SEQUENCE_FIELDS},
                n_tabular=0,
                sequence_length=sequence_length,
            )
        else:
            model_config(
                model_type, seed=cfg.training.seed, **family_settings(model_type, cfg.models.get(model_type, {}))
            )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid model settings of {model_type!r}: {e}") from None


def lr_lambda(cfg: PipelineConfig, total_steps: int) -> Callable[[int], float]:
    """LR factor per optimiser step: constant, or linear warm-up then cosine decay to 0."""
    warmup = int(cfg.training.warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if cfg.training.lr_schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
