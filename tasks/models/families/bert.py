"""BERT intent model: a small ``transformers.BertModel`` over fused field embeddings, fused with tabular MLP.

Built from a ``BertConfig`` (no hub download); its own settings (``BertIntentConfig`` beyond the shared
sizes) are the ``models.bert`` config section. A learned [CLS] vector is prepended; positions are
counted from the first real event, so the amount of left padding never changes the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import BertConfig, BertModel

from tasks.models.base import IntentModel, IntentModelConfig, register_model


@dataclass(frozen=True)
class BertIntentConfig(IntentModelConfig):
    num_layers: int = 2
    num_heads: int = 2
    intermediate_dim: int = 128
    # "cls" takes the [CLS] output; "attention" is a learned attention pooling over real events.
    pooling: str = "cls"

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.num_layers, self.num_heads, self.intermediate_dim) < 1:
            raise ValueError("num_layers, num_heads and intermediate_dim must be >= 1")
        if self.pooling not in ("cls", "attention"):
            raise ValueError(f"pooling must be 'cls' or 'attention', not {self.pooling!r}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}")


@register_model("bert")
class BertIntentModel(IntentModel):
    config_class = BertIntentConfig

    def __init__(self, cfg: BertIntentConfig):
        super().__init__(cfg)
        h = cfg.hidden_dim
        self.to_hidden = nn.Linear(cfg.embedding_dim, h)
        self.cls = nn.Parameter(torch.zeros(1, 1, h))
        nn.init.normal_(self.cls, std=0.02)
        self.bert = BertModel(
            BertConfig(
                vocab_size=2,  # unused: the model only ever receives inputs_embeds
                hidden_size=h,
                num_hidden_layers=cfg.num_layers,
                num_attention_heads=cfg.num_heads,
                intermediate_size=cfg.intermediate_dim,
                hidden_dropout_prob=cfg.dropout,
                attention_probs_dropout_prob=cfg.dropout,
                max_position_embeddings=cfg.sequence_length + 1,
                type_vocab_size=1,
            ),
            add_pooling_layer=False,
        )
        self.attn_score = nn.Linear(h, 1) if cfg.pooling == "attention" else None
        # Inputs arrive as inputs_embeds, so the token table is never used; frozen, DDP does not wait for its grads.
        self.bert.embeddings.word_embeddings.weight.requires_grad_(False)

    def _transformer(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Token states [B, 1+L, H] ([CLS] first) and their attention mask [B, 1+L]."""
        mask = batch["seq_mask"]  # [B, L]
        b = mask.shape[0]
        x = self.to_hidden(self.embed(batch))  # [B, L, H]
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1)  # [B, 1+L, H]
        full_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)  # [B, 1+L]
        # [CLS] at position 0, the k-th real event at position k; padding gets 0 and is masked out.
        positions = torch.cumsum(full_mask.long(), dim=1) - 1  # [B, 1+L]
        positions = positions * full_mask.long()
        out = self.bert(
            inputs_embeds=x,
            attention_mask=full_mask.long(),
            position_ids=positions,
            token_type_ids=torch.zeros_like(positions),
        ).last_hidden_state  # [B, 1+L, H]
        return out, full_mask

    def event_states(self, batch: dict[str, Tensor]) -> Tensor:
        return self._transformer(batch)[0][:, 1:]  # [B, L, H]

    def encode_sequence(self, batch: dict[str, Tensor]) -> Tensor:
        out, full_mask = self._transformer(batch)
        if self.attn_score is None:
            return out[:, 0]  # [B, H]
        scores = self.attn_score(out).squeeze(-1).masked_fill(~full_mask, float("-inf"))  # [B, 1+L]
        return torch.einsum("bl,blh->bh", torch.softmax(scores, dim=1), out)  # [B, H]
