"""Per-epoch training checkpoints, so a crashed training resumes at its last complete epoch.

A checkpoint belongs to one training identity: the training set (id and manifest content), the model
type, the epoch count, the ``training`` config section and the world size. A relaunch with the same
identity finds the checkpoint and continues; any other training gets a different folder and starts
fresh. Rank 0 writes ``checkpoint.pt`` atomically (temporary file, then rename) after every epoch, so a
kill at any moment leaves either the previous complete epoch or the new one, never a torn file. A run
that registered its model removes its folder, so the next launch of the same training starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pt"
# Bumped when the payload layout changes, so an old checkpoint is ignored rather than misread.
FORMAT_VERSION = 1


def training_key(manifest: dict[str, Any], model_type: str, epochs: int, training: dict[str, Any], world: int) -> str:
    """Stable digest of everything that must match for a checkpoint to be resumable."""
    identity = {
        "format": FORMAT_VERSION,
        "manifest": manifest,
        "model_type": model_type,
        "epochs": epochs,
        "training": training,
        "world_size": world,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def checkpoint_dir(runs_dir: Path, training_set_id: str, model_type: str, key: str) -> Path:
    return Path(runs_dir) / "checkpoints" / f"{model_type}-{training_set_id}-{key[:16]}"


def rng_state() -> dict[str, Any]:
    """This process's random generator states (dropout draws from torch's global generator)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(folder: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as the folder's checkpoint; readers see the old file or the new one, never a partial one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / CHECKPOINT_FILE
    tmp = folder / f".{CHECKPOINT_FILE}.{os.getpid()}.tmp"
    torch.save({"format": FORMAT_VERSION, **payload}, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


def load(folder: Path) -> dict[str, Any] | None:
    """The folder's checkpoint, or None when there is none (or it has another payload layout)."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    # weights_only=False: the payload holds RNG states (numpy/python tuples) written by this module only.
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format") != FORMAT_VERSION:
        return None
    return payload


def remove(folder: Path) -> None:
    """Drop a finished training's checkpoints, so the same training launched again starts fresh."""
    shutil.rmtree(folder, ignore_errors=True)
