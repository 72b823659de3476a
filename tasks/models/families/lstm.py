"""LSTM intent model: fused field embeddings -> LSTM -> last valid hidden state, fused with tabular MLP.

Its own settings (``LSTMConfig`` beyond the shared sizes) are the ``models.lstm`` config section.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from tasks.models.base import IntentModel, IntentModelConfig, register_model


@dataclass(frozen=True)
class LSTMConfig(IntentModelConfig):
    num_layers: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, not {self.num_layers}")


def right_align(x: Tensor, lengths: Tensor) -> Tensor:
    """Move left-padded rows to right padding: x [B, L, D], lengths [B] -> [B, L, D].

    Row i's real events occupy positions L-n_i..L-1; afterwards they occupy 0..n_i-1 in the same
    order, which is what pack_padded_sequence expects.
    """
    b, length = x.shape[:2]
    idx = (torch.arange(length, device=x.device).unsqueeze(0) + (length - lengths).unsqueeze(1)) % length  # [B, L]
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(b, length, x.shape[2]))


@register_model("lstm")
class LSTMIntentModel(IntentModel):
    config_class = LSTMConfig

    def __init__(self, cfg: LSTMConfig):
        super().__init__(cfg)
        self.lstm = nn.LSTM(
            cfg.embedding_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )

    def event_states(self, batch: dict[str, Tensor]) -> Tensor:
        x = self.embed(batch)  # [B, L, D]
        length = x.shape[1]
        lengths = batch["seq_mask"].sum(dim=1)  # [B]
        packed = pack_padded_sequence(
            right_align(x, lengths), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=length)  # [B, L, H], events first
        # Back to the batch's left padding: position p reads the right-aligned position (p + n) mod L.
        idx = (torch.arange(length, device=out.device).unsqueeze(0) + lengths.unsqueeze(1)) % length  # [B, L]
        return torch.gather(out, 1, idx.unsqueeze(-1).expand(-1, -1, out.shape[2]))  # [B, L, H]

    def encode_sequence(self, batch: dict[str, Tensor]) -> Tensor:
        x = self.embed(batch)  # [B, L, D]
        lengths = batch["seq_mask"].sum(dim=1)  # [B]
        x = right_align(x, lengths)  # [B, L, D]
        # Packing makes the LSTM stop at each row's last real event, so padding never enters the state;
        # empty rows get length 1 (a zero vector) and are zeroed by the caller.
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)  # h_n [num_layers, B, H]
        return h_n[-1]  # [B, H]
