"""Self-supervised pretraining objective of a behaviour encoder: masked-event prediction.

A share of each user's real events is masked: their event type, category and item bucket become the
padding index (whose embedding is zero), while the event keeps its place, hour and gaps, so the encoder
still knows that something happened then. Linear heads on the encoder's per-event states
(``IntentModel.event_states``) predict the three masked fields; the loss is the sum of their mean
cross-entropies over the masked events. Any family that has per-event states can be pretrained; the
user-level heads are not part of it (``IntentModel.HEAD_MODULES``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from tasks.models.base import IntentModel

# Batch keys of the fields a masked event hides and the heads predict.
MASKED_FIELDS = ("seq_event_type", "seq_category", "seq_item")


def choose_masked(seq_mask: Tensor, rate: float, generator: torch.Generator) -> Tensor:
    """Events to mask [B, L] bool: each real event with probability ``rate``, and at least one event of every
    user who has any (so each such user contributes a target). Padding is never chosen."""
    u = torch.rand(seq_mask.shape, generator=generator)  # [B, L]
    chosen = (u < rate) & seq_mask
    # A random real event of each row: the largest draw among its real events.
    one = torch.nn.functional.one_hot(u.masked_fill(~seq_mask, -1.0).argmax(dim=1), seq_mask.shape[1]).bool()
    return chosen | (one & seq_mask.any(dim=1, keepdim=True))


# The event's text names its category (its code, or a query about it): a masked event hides it too.
HIDDEN_WITH_MASK = ("seq_text",)


def mask_events(batch: dict[str, Tensor], chosen: Tensor) -> dict[str, Tensor]:
    """A copy of ``batch`` whose ``MASKED_FIELDS`` (and text) are the padding index at the ``chosen`` [B, L]
    events."""
    hidden = [*MASKED_FIELDS, *(f for f in HIDDEN_WITH_MASK if f in batch)]
    return {**batch, **{f: batch[f].masked_fill(chosen, 0) for f in hidden}}


class MaskedEventModel(nn.Module):
    """A family's ``IntentModel`` with one linear head per masked field on its per-event states."""

    def __init__(self, encoder: IntentModel):
        super().__init__()
        self.encoder = encoder
        h = encoder.cfg.hidden_dim
        self.heads = nn.ModuleDict({f: nn.Linear(h, encoder.cfg.vocab_sizes[f]) for f in MASKED_FIELDS})
        for name, module in encoder.named_children():
            if name in encoder.HEAD_MODULES:
                module.requires_grad_(False)

    def freeze_unreached(self, batch: dict[str, Tensor], chosen: Tensor) -> list[str]:
        """Freeze the trainable parameters that the objective never reaches (e.g. a pooling layer that reads
        the whole sequence), so DDP does not wait for their gradients; returns their names."""
        self.zero_grad(set_to_none=True)
        masked_loss(self(mask_events(batch, chosen), chosen), batch, chosen).backward()
        frozen = [n for n, p in self.named_parameters() if p.requires_grad and p.grad is None]
        for n, p in self.named_parameters():
            if n in frozen:
                p.requires_grad_(False)
        self.zero_grad(set_to_none=True)
        return frozen

    def forward(self, batch: dict[str, Tensor], chosen: Tensor) -> dict[str, Tensor]:
        """Logits of each masked field at the ``chosen`` events: field -> [M, vocab]."""
        states = self.encoder.event_states(batch)[chosen]  # [M, H]
        return {f: head(states) for f, head in self.heads.items()}


def masked_loss(logits: dict[str, Tensor], batch: dict[str, Tensor], chosen: Tensor) -> Tensor:
    """Sum over the masked fields of the mean cross-entropy at the chosen events (``batch``: unmasked)."""
    return sum(
        (nn.functional.cross_entropy(logits[f].float(), batch[f][chosen]) for f in MASKED_FIELDS),
        start=torch.zeros((), device=chosen.device),
    )


@torch.no_grad()
def masked_accuracy(
    model: MaskedEventModel, batch: dict[str, Tensor], chosen: Tensor, chunk: int = 1024
) -> tuple[float, dict[str, float]]:
    """Mean loss and per-field accuracy of ``model`` on the chosen events of ``batch``, in eval mode."""
    was = model.training
    model.eval()
    try:
        n = len(chosen)
        hits = dict.fromkeys(MASKED_FIELDS, 0)
        total_loss, events = 0.0, 0
        for s in range(0, n, chunk):
            part = {k: v[s : s + chunk] for k, v in batch.items()}
            c = chosen[s : s + chunk]
            m = int(c.sum())
            if m == 0:
                continue
            logits = model(mask_events(part, c), c)
            total_loss += float(masked_loss(logits, part, c)) * m
            events += m
            for f in MASKED_FIELDS:
                hits[f] += int((logits[f].argmax(dim=1) == part[f][c]).sum())
        return total_loss / max(events, 1), {f: hits[f] / max(events, 1) for f in MASKED_FIELDS}
    finally:
        model.train(was)


def majority_accuracy(train: dict[str, Tensor], batch: dict[str, Tensor], chosen: Tensor) -> dict[str, float]:
    """Per field, the accuracy at the chosen events of always guessing the field's most frequent value among
    the real events of ``train``: the yardstick a pretrained encoder must beat."""
    real = train["seq_mask"]
    out = {}
    for f in MASKED_FIELDS:
        values = train[f][real].numpy()
        guess = int(np.bincount(values).argmax()) if len(values) else 0
        targets = batch[f][chosen]
        out[f] = float((targets == guess).float().mean()) if len(targets) else float("nan")
    return out
