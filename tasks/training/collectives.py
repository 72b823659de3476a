"""Process-group helpers of the training processes; all degrade to single-process when no group exists."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@contextlib.contextmanager
def process_group() -> Iterator[torch.device]:
    """This torchrun process's device, inside its process group (NCCL on CUDA, gloo on CPU) when torchrun started
    it (WORLD_SIZE set); the group is destroyed on the way out, error or not. Outside torchrun: no group."""
    distributed = "WORLD_SIZE" in os.environ
    use_cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if distributed else 0
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if distributed:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        yield torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


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
