"""Process-group helpers of the training processes; all degrade to single-process when no group exists."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of this process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order, on every rank."""
    size = world()[1]
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out


def all_max(value: int, device: torch.device) -> int:
    """The largest ``value`` over the ranks."""
    if world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_mean(value: float, device: torch.device) -> float:
    """The mean of ``value`` over the ranks."""
    size = world()[1]
    if size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / size


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (no shared filesystem needed between nodes)."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank0_print(msg: str, job: str = "train") -> None:
    """Progress line of the training (or of another torchrun ``job``), printed by rank 0 only."""
    if world()[0] == 0:
        print(f"[{job}] {msg}", flush=True)
