"""What one training step and one evaluation do: the optimiser step, batched prediction, split metrics."""

from __future__ import annotations

import math

import numpy as np
import torch

from tasks.config import PipelineConfig
from tasks.evaluate import SplitEval, split_metrics
from tasks.models.base import IntentModel
from tasks.models.calibration import Calibration
from tasks.schema import INTENTS
from tasks.training.collectives import gather_objects
from tasks.training.data import TrainingError


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def take(batch: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows ``idx`` [b] of a batch; with candidates, also those rows' candidates (cand_* keys),
    re-pointed at the new rows. Candidates must be ordered by cand_row (as encode_candidates makes them)."""
    out = {k: v[idx] for k, v in batch.items() if not k.startswith("cand_")}
    if "cand_row" not in batch:
        return out
    rows = batch["cand_row"]  # [C], ascending
    idx = torch.as_tensor(idx, dtype=torch.long)
    starts = torch.searchsorted(rows, idx)  # [b]
    counts = torch.searchsorted(rows, idx, right=True) - starts  # [b]
    offsets = torch.cumsum(counts, 0) - counts  # [b]
    total = int(counts.sum())
    pos = torch.repeat_interleave(starts - offsets, counts) + torch.arange(total)  # [c] positions in batch
    for k, v in batch.items():
        if k.startswith("cand_") and k != "cand_row":
            out[k] = v[pos]
    out["cand_row"] = torch.repeat_interleave(torch.arange(len(idx)), counts)  # [c]
    return out


def train_step(
    ddp_model: torch.nn.Module,
    model: IntentModel,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    weight: torch.Tensor,
    *,
    grad_clip_norm: float,
) -> float:
    """One optimiser step on this rank's share of a global batch; returns this rank's loss.

    ``ddp_model`` is the DDP wrapper (or the model itself in a single process); ``model`` the bare
    module whose ``loss`` is used. DDP averages gradients over ranks before the clip.
    """
    device_type = labels.device.type
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device_type == "cuda"):
        output = ddp_model(batch)  # IntentOutput: intent [b, 3], category [c]
    loss = model.loss(output, labels, weight, category_labels=batch.get("cand_label"))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def predict_encoded(
    model: IntentModel, batch: dict[str, torch.Tensor], device: torch.device, chunk: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Of an encoded split, ``chunk`` users per forward pass: user probabilities [N, 3], and per
    candidate its user's row [C], label [C] and probability [C] (empty without candidates)."""
    n = len(batch["tabular"])
    out, rows, labels, cats = [], [], [], []
    for s in range(0, n, chunk):
        part = take(batch, torch.arange(s, min(s + chunk, n)))
        cand_label = part.pop("cand_label", None)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = model.predict_output(to_device(part, device))
        out.append(pred.intent.float().cpu().numpy())
        if cand_label is not None:
            rows.append(part["cand_row"].numpy() + s)
            labels.append(cand_label.numpy())
            cats.append(pred.category.float().cpu().numpy())
    probs = np.concatenate(out) if out else np.zeros((0, len(INTENTS)), dtype=np.float32)
    if not rows:
        return probs, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)
    return probs, np.concatenate(rows), np.concatenate(labels), np.concatenate(cats)


def evaluate_split(
    cfg: PipelineConfig,
    model: IntentModel,
    encoded: dict[str, torch.Tensor] | None,
    labels: np.ndarray | None,
    device: torch.device,
) -> SplitEval:
    """Predictions and metrics of one split whose files are sharded over ranks; identical on every rank.

    User-level metrics over all users, plus category HitRate@k/NDCG@k over each user's candidates.
    """
    if encoded is not None:
        probs, cand_rows, cand_y, cand_p = predict_encoded(model, encoded, device, cfg.training.eval_batch_size)
        local = (labels, probs, cand_rows, cand_y, cand_p)
    else:
        local = None
    parts = [p for p in gather_objects(local) if p is not None and len(p[0])]
    if not parts:
        raise TrainingError("split has no rows on any rank")
    y = np.concatenate([p[0] for p in parts])
    p = np.concatenate([p[1] for p in parts])
    # Users are disjoint across ranks; offset each rank's rows so every user is one group.
    offsets = np.cumsum([0] + [len(q[0]) for q in parts])[:-1]
    groups = np.concatenate([q[2] + off for q, off in zip(parts, offsets, strict=True)])
    cand_y, cand_p = np.concatenate([q[3] for q in parts]), np.concatenate([q[4] for q in parts])
    return evaluation(cfg, y, p, groups, cand_y, cand_p)


def evaluation(
    cfg: PipelineConfig, y: np.ndarray, p: np.ndarray, groups: np.ndarray, cand_y: np.ndarray, cand_p: np.ndarray
) -> SplitEval:
    """``SplitEval`` of these predictions under the config's threshold, top-k fraction and category k."""
    t = cfg.training
    metrics = split_metrics(
        y, p, groups, cand_y, cand_p, threshold=t.threshold, top_k_fraction=t.top_k_fraction, k=t.category_eval_k
    )
    return SplitEval(metrics, y, p, groups, cand_y, cand_p)


def calibrate(cfg: PipelineConfig, val: SplitEval, test: SplitEval) -> tuple[Calibration, SplitEval, SplitEval]:
    """Fit ``training.calibration`` on the validation predictions; both splits' evaluations, calibrated."""
    cal = Calibration.fit(cfg.training.calibration, val.p, val.y, val.cand_p, val.cand_y)

    def apply(e: SplitEval) -> SplitEval:
        p, cand_p = cal.apply(e.p, e.cand_p)
        return evaluation(cfg, e.y, p, e.cand_groups, e.cand_y, cand_p)

    return cal, apply(val), apply(test)


def score(cfg: PipelineConfig, metrics: dict[str, float]) -> float:
    """Validation score that early stopping and the search maximise: the ``training.early_stopping``
    weighted sum of metrics, over those defined on this split."""
    parts = [w * metrics[m] for m, w in cfg.training.early_stopping.items() if math.isfinite(metrics.get(m, math.nan))]
    # Ranking metrics are undefined when the validation split has one class; fall back to (negated) log loss.
    return float(sum(parts)) if parts else -metrics["purchase_log_loss"]
