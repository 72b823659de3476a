"""Shared interface of every purchase-intent model: config dataclasses, batch contract, registry.

Batch contract (what ``tasks.models.encoding.FeatureEncoder.encode`` produces):
    seq_event_type, seq_category, seq_item, seq_gap_cutoff, seq_gap_prev, seq_hour: long [B, L],
        left-padded with 0 (index 0 is padding in every field vocabulary)
    seq_mask: bool [B, L], True on real events
    tabular: float [B, F], standardised f_* features
    seq_text: long [B, L], with text: row of each event's text in the model's text-vector table (0: none)
Optional candidate keys (``FeatureEncoder.encode_candidates``), the user x category pairs to rank:
    cand_row: long [C], row (0..B-1) of the candidate's user in this batch, ascending
    cand_category: long [C], index in the seq_category vocabulary (OOV for a category unseen in training)
    cand_tabular: float [C, P], standardised pair features (f_uc_*)
    cand_label: float [C], training and evaluation only: 1 if the user bought in that category
    cand_text: long [C], with text: row of the category's code text in the text-vector table
Every model maps a batch to an ``IntentOutput``: user-level logits [B, len(INTENTS)] in
``tasks.schema.INTENTS`` order from its own sequence encoder, and candidate logits [C] from the shared
category head. Training, evaluation and scoring call the same methods whatever the architecture.

A family is any class registered with ``register_model``: an ``IntentModel`` here (trained by the DDP
loop under torchrun) or a ``tasks.models.tabular.TabularIntentModel`` (fitted in one process). What
scoring, the gate and training's evaluation see of either is a ``Predictor``: one chunk of user rows
(and their candidates) in, a ``Prediction`` out; its ``save`` writes the artifacts that the family's
``from_artifacts`` reads back inside the packaged pyfunc.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np
import pandas as pd
import torch
from pydantic import TypeAdapter, ValidationError
from torch import Tensor, nn

from tasks.models import families
from tasks.models.encoding import FeatureEncoder
from tasks.models.families import family_names
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
TEXT_TABLE = "embed.text.weight"
CANDIDATE_KEYS = ("cand_row", "cand_category", "cand_tabular")


class Prediction(NamedTuple):
    """What a ``Predictor`` returns for one chunk of user rows."""

    intent: np.ndarray  # [B, len(INTENTS)] probabilities, INTENTS order
    category: np.ndarray  # [C] probability of each given candidate, in the order given
    reasons: list[list[str]] | None  # per user row, the f_* features that most raise p_purchase; None if not asked


class Predictor(Protocol):
    """A trained model of any family as the packaged pyfunc and training's evaluation use it."""

    model_type: str
    feature_columns: list[str]
    pair_feature_columns: list[str]

    def predict_chunk(
        self, users: pd.DataFrame, cand_rows: np.ndarray | None, cand: pd.DataFrame | None, reasons_k: int
    ) -> Prediction:
        """Probabilities of ``users`` (f_* and seq_* columns) and of their candidates: ``cand`` holds
        category_id and the pair features, ``cand_rows`` [C] the (ascending) row of each one's user."""
        ...

    def spec(self) -> dict[str, Any]:
        """JSON-able description (model_type, model_config) stored beside the artifacts."""
        ...

    def save(self, folder: Path) -> dict[str, str]:
        """Write the artifacts into ``folder``; returns {artifact name: path}."""
        ...


class IntentOutput(NamedTuple):
    """What every model's forward returns (a tuple, so DDP passes it through unchanged)."""

    intent: Tensor  # [B, len(INTENTS)] user-level logits
    category: Tensor  # [C] candidate logits; C = 0 when the batch carries no candidates
    category_row: Tensor  # [C] long, the batch row of each candidate's user


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
    # Pair (user x category) tabular features of each candidate; 0 means the head sees none.
    n_pair_tabular: int = 0
    # BCE positive-class weight of the candidate head; 1.0 means no re-weighting.
    category_pos_weight: float = 1.0
    # Weight of the candidate BCE beside the user-level loss; 0 trains the user heads only.
    category_loss_weight: float = 1.0
    # Rows and width of the frozen text-vector table (pretrained encoder vectors, rows 0 and 1 zero); 0: no text.
    text_vocab: int = 0
    text_dim: int = 0

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
        if (self.text_vocab > 0) != (self.text_dim > 0) or min(self.text_vocab, self.text_dim) < 0:
            raise ValueError(f"text_vocab and text_dim are both 0 or both > 0, got {self.text_vocab}, {self.text_dim}")
        if self.n_pair_tabular < 0 or self.category_pos_weight <= 0 or self.category_loss_weight < 0:
            raise ValueError("n_pair_tabular and category_loss_weight must be >= 0, category_pos_weight > 0")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pos_weight"] = list(self.pos_weight)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntentModelConfig:
        data = known_fields(cls, data)
        if "pos_weight" in data:
            data["pos_weight"] = tuple(float(w) for w in data["pos_weight"])
        return cls(**data)


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` for the dataclass ``cls``; a key that is not one of its fields is an error."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return dict(data)


class FieldEmbedding(nn.Module):
    """One embedding table per sequence field, plus each event's projected text vector when the model reads
    text, fused into one vector per position."""

    def __init__(self, cfg: IntentModelConfig):
        super().__init__()
        d = cfg.embedding_dim
        self.fusion = cfg.field_fusion
        self.tables = nn.ModuleDict(
            {name: nn.Embedding(cfg.vocab_sizes[name], d, padding_idx=0) for name in SEQUENCE_FIELDS}
        )
        # The pretrained vectors stay as the encoder made them (frozen; set by set_text_vectors, saved in the
        # state dict); only their projection to the model width learns.
        self.text = nn.Embedding(cfg.text_vocab, cfg.text_dim, _freeze=True) if cfg.text_vocab else None
        self.text_project = nn.Linear(cfg.text_dim, d) if cfg.text_vocab else None
        n_parts = len(SEQUENCE_FIELDS) + (1 if self.text is not None else 0)
        self.project = nn.Linear(d * n_parts, d) if self.fusion == "concat" else None
        self.norm = nn.LayerNorm(d)

    @torch.no_grad()
    def set_text_vectors(self, vectors: Tensor) -> None:
        """Rows 2.. of the text table ([text_vocab - 2, text_dim]); rows 0 (no text) and 1 (unknown) are zero."""
        if self.text is None:
            raise ValueError("this model reads no text (text_vocab 0)")
        expected = (self.text.num_embeddings - 2, self.text.embedding_dim)
        if tuple(vectors.shape) != expected:
            raise ValueError(f"text vectors have shape {tuple(vectors.shape)}, the model's table needs {expected}")
        self.text.weight.zero_()
        self.text.weight[2:] = vectors.to(self.text.weight.dtype)

    @torch.no_grad()
    def append_text_vectors(self, vectors: Tensor) -> None:
        """More rows ([n, text_dim]) after the table's last one, frozen like the others."""
        assert self.text is not None
        table = torch.cat([self.text.weight, vectors.to(self.text.weight.dtype)])
        self.text = nn.Embedding.from_pretrained(table, freeze=True)

    def text_vectors(self, index: Tensor) -> Tensor:
        """Text-table rows ``index`` (any shape S) projected to the model width: [*S, D]."""
        assert self.text is not None and self.text_project is not None
        return self.text_project(self.text(index))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        parts = [self.tables[name](batch[name]) for name in SEQUENCE_FIELDS]  # each [B, L, D]
        if self.text is not None:
            parts.append(self.text_vectors(batch["seq_text"]))  # [B, L, D]
        if self.project is None:
            x = functools.reduce(torch.add, parts)  # [B, L, D], without materialising [6, B, L, D]
        else:
            x = self.project(torch.cat(parts, dim=-1))  # [B, L, 6D] -> [B, L, D]
        # Zero padded positions so nothing downstream can read them by accident.
        return self.norm(x) * batch["seq_mask"].unsqueeze(-1)  # [B, L, D]


class IntentModel(nn.Module):
    """Base of all architectures: sequence encoder (subclass) + tabular MLP -> fused user representation,
    read by the user-level 3-head MLP and by the shared category-intent head."""

    config_class: ClassVar[type[IntentModelConfig]] = IntentModelConfig
    # The config fields every family of this kind shares (set from `training`, not from `models.<name>`).
    shared_config: ClassVar[type] = IntentModelConfig
    # tasks.training.launcher runs a family by its trainer: "torchrun" (DDP) here, "local" for tabular families.
    trainer: ClassVar[str] = "torchrun"
    # Modules that read the user representation; everything else is the sequence encoder, which
    # self-supervised pretraining trains (tasks.pretrain) and a fine-tuning may start from.
    HEAD_MODULES: ClassVar[tuple[str, ...]] = ("tabular_mlp", "head", "pair_mlp", "category_head")

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
        self.pair_mlp = (
            nn.Sequential(nn.Linear(cfg.n_pair_tabular, h), nn.GELU(), nn.Linear(h, h)) if cfg.n_pair_tabular else None
        )
        # Candidate input: [user representation (fused), category embedding (D), pair features (H, if any)].
        cand_in = fused + cfg.embedding_dim + (h if self.pair_mlp is not None else 0)
        self.category_head = nn.Sequential(nn.Linear(cand_in, h), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(h, 1))
        self.register_buffer("pos_weight", torch.tensor(cfg.pos_weight, dtype=torch.float32), persistent=False)

    def encode_sequence(self, batch: dict[str, Tensor]) -> Tensor:
        """Sequence representation [B, hidden_dim]; must ignore padded positions entirely."""
        raise NotImplementedError

    def event_states(self, batch: dict[str, Tensor]) -> Tensor:
        """Per-event states [B, L, H] of the sequence encoder, aligned with the batch's positions (padding
        positions hold anything); what pretraining's masked-event heads read."""
        raise NotImplementedError(f"{type(self).__name__} has no per-event states: it cannot be pretrained")

    def sequence_encoder_state(self) -> dict[str, Tensor]:
        """The state_dict entries of the sequence encoder (not of ``HEAD_MODULES``)."""
        return {k: v for k, v in self.state_dict().items() if k.split(".", 1)[0] not in self.HEAD_MODULES}

    @torch.no_grad()
    def init_sequence_encoder(
        self, state: dict[str, Tensor], source_categories: dict[str, int], categories: dict[str, int]
    ) -> list[str]:
        """Start from a pretrained sequence encoder of this family (``state``: its ``sequence_encoder_state``), or
        from a whole trained model of it (its ``state_dict``, such as the champion's: the heads are copied too);
        returns the names of the tensors copied.

        The category table is copied row by row by category id (``source_categories`` and ``categories``: raw
        id -> row of the source's and of this model's vocabulary), with the padding and OOV rows; a category
        the source never saw keeps its fresh row. Every other tensor must have this model's shape.
        """
        own = self.state_dict()
        table = "embed.tables.seq_category.weight"
        # The text table holds this model's own texts' vectors (set_text_vectors); everything else is copied.
        names = [n for n in self.sequence_encoder_state() if n != TEXT_TABLE]
        missing = sorted(set(names) - set(state))
        if missing:
            raise ValueError(
                f"the pretrained encoder lacks {len(missing)} tensor(s) of this model, e.g. {missing[:3]} "
                "(pretrain on a training set of the same text setting)"
            )
        heads = [n for n in own if n.split(".", 1)[0] in self.HEAD_MODULES]
        if any(n in state for n in heads):
            absent = sorted(set(heads) - set(state))
            if absent:
                raise ValueError(
                    f"the source model lacks head tensor(s) of this model, e.g. {absent[:3]} (it was trained "
                    "without the tabular or pair features this one reads)"
                )
            names += heads
        # Every shape is checked before anything is copied, so a mismatch leaves this model as it was.
        for name in names:
            # The category table's rows are matched by id; only its width must agree.
            skip = 1 if name == table else 0
            if state[name].shape[skip:] != own[name].shape[skip:]:
                raise ValueError(
                    f"pretrained {name} has shape {tuple(state[name].shape)}, this model {tuple(own[name].shape)}: "
                    "pretrain with the same training sizes (embedding_dim, hidden_dim, the family's models section)"
                )
        for name in names:
            src, dst = state[name], own[name]
            if name == table:
                pairs = [(source_categories[c], j) for c, j in categories.items() if c in source_categories]
                rows_src = torch.tensor([0, 1, *(i for i, _ in pairs)], dtype=torch.long)
                rows_dst = torch.tensor([0, 1, *(j for _, j in pairs)], dtype=torch.long)
                dst[rows_dst] = src[rows_src].to(dst.dtype)
            else:
                dst.copy_(src)
        return names

    def sequence_features(self, batch: dict[str, Tensor]) -> Tensor:
        """The architecture's sequence representation [B, H], zero for users without events."""
        seq = self.encode_sequence(batch)  # [B, H]
        # A user without events has no sequence signal: zero it rather than trust a pad-only encoding.
        has_events = batch["seq_mask"].any(dim=1, keepdim=True).to(seq.dtype)  # [B, 1]
        return seq * has_events

    def fuse(self, seq: Tensor, tabular: Tensor) -> Tensor:
        """Late fusion: seq [B, H], tabular [B, F] -> user representation [B, H or 2H]."""
        if self.tabular_mlp is None:
            return seq
        return torch.cat([seq, self.tabular_mlp(tabular).to(seq.dtype)], dim=-1)

    def category_logits(self, user: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Shared candidate head: user [B, R] -> (logits [C], cand_row [C]).

        Always runs, on empty tensors when the batch has no candidates, so that under DDP every
        parameter takes part in every step.
        """
        if "cand_category" in batch:
            rows, cats, pair = batch["cand_row"], batch["cand_category"], batch.get("cand_tabular")
        else:
            rows = torch.zeros(0, dtype=torch.long, device=user.device)
            cats, pair = rows, None
        category = self.embed.tables["seq_category"](cats)  # [C, D]
        if self.embed.text is not None:
            # A category's code text: what lets the head rank a category the training never saw (OOV row).
            texts = batch.get("cand_text", torch.zeros_like(cats)) if "cand_category" in batch else cats
            category = category + self.embed.text_vectors(texts)
        parts = [user[rows], category.to(user.dtype)]  # [C, R], [C, D]
        if self.pair_mlp is not None:
            if pair is None:
                pair = torch.zeros(len(rows), self.cfg.n_pair_tabular, device=user.device)
            parts.append(self.pair_mlp(pair).to(user.dtype))  # [C, H]
        return self.category_head(torch.cat(parts, dim=-1)).squeeze(-1), rows  # [C], [C]

    def forward(self, batch: dict[str, Tensor]) -> IntentOutput:
        user = self.fuse(self.sequence_features(batch), batch["tabular"])  # [B, R]
        category, rows = self.category_logits(user, batch)
        return IntentOutput(self.head(user), category, rows)  # [B, 3], [C], [C]

    def loss(
        self, output: IntentOutput, labels: Tensor, weight: Tensor | None = None, category_labels: Tensor | None = None
    ) -> Tensor:
        """Weighted BCE over the heads (labels [B, 3], weight [B]) plus ``category_loss_weight`` x the
        candidate BCE (category_labels [C], each candidate weighted by its user's weight) -> scalar.

        Both terms are normalised by the user row count B, not by weight sums or C, so the mean over
        equal-sized DDP shards equals the loss of the whole global batch however candidates spread.
        """
        logits = output.intent
        per = nn.functional.binary_cross_entropy_with_logits(
            logits.float(), labels.float(), pos_weight=self.pos_weight, reduction="none"
        )  # [B, 3]
        per_row = per.sum(dim=1)  # [B]
        if weight is not None:
            per_row = per_row * weight.float()
        total = per_row.mean()
        if category_labels is not None and self.cfg.category_loss_weight > 0:
            per_cand = nn.functional.binary_cross_entropy_with_logits(
                output.category.float(),
                category_labels.float(),
                pos_weight=torch.tensor(self.cfg.category_pos_weight, device=logits.device),
                reduction="none",
            )  # [C]
            if weight is not None:
                per_cand = per_cand * weight.float()[output.category_row]
            total = total + self.cfg.category_loss_weight * per_cand.sum() / max(len(labels), 1)
        return total

    @torch.no_grad()
    def predict_output(self, batch: dict[str, Tensor]) -> IntentOutput:
        """Probabilities (intent [B, 3], category [C]) in eval mode (no dropout); restores the mode."""
        was_training = self.training
        self.eval()
        try:
            out = self.forward(batch)
            return IntentOutput(
                torch.sigmoid(out.intent.float()), torch.sigmoid(out.category.float()), out.category_row
            )
        finally:
            self.train(was_training)

    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        """User-level probabilities [B, 3] in eval mode."""
        return self.predict_output(batch).intent

    def predict_with_tabular_gradient(self, batch: dict[str, Tensor], head: int = 0) -> tuple[IntentOutput, Tensor]:
        """``predict_output`` plus d logit[:, head] / d tabular [B, F], from one pass of the encoder.

        The sequence representation does not depend on the tabular input, so it is computed once
        without autograd and only the late fusion and the user head are differentiated: backward
        never runs through the LSTM/BERT encoder, and predictions and gradients share its output.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                seq = self.sequence_features(batch)  # [B, H]
            tab = batch["tabular"].detach().clone().requires_grad_(True)  # [B, F]
            with torch.enable_grad():
                user = self.fuse(seq, tab)  # [B, R]
                intent = self.head(user)  # [B, 3]; rows independent: d(sum)/d tab[i] is row i's own gradient
                (grad,) = torch.autograd.grad(intent[:, head].sum(), tab)
            with torch.no_grad():
                category, rows = self.category_logits(user.detach(), batch)
            probs = IntentOutput(torch.sigmoid(intent.detach().float()), torch.sigmoid(category.float()), rows)
            return probs, grad
        finally:
            self.train(was_training)

    def tabular_gradient(self, batch: dict[str, Tensor], head: int = 0) -> Tensor:
        """d logit[:, head] / d tabular, [B, F], in eval mode, without backward through the encoder."""
        return self.predict_with_tabular_gradient(batch, head)[1]

    @classmethod
    def from_artifacts(cls, spec: dict[str, Any], artifacts: dict[str, str]) -> TorchPredictor:
        """The ``Predictor`` that ``TorchPredictor.save`` wrote (weights, encoder) under ``spec``."""
        encoder = FeatureEncoder.from_json(Path(artifacts["encoder"]).read_text())
        model = cls(cls.config_class.from_dict(spec["model_config"]))
        model.load_state_dict(torch.load(artifacts["weights"], map_location="cpu", weights_only=True))
        return TorchPredictor(model.eval(), encoder, spec["model_type"])


def reasons_from_gradient(grad: Tensor, tabular: Tensor, names: list[str], top_k: int) -> list[list[str]]:
    """Per row, the features whose gradient x input (grad, tabular [B, F]) is largest, positive ones
    only, strongest first. Inputs are standardised, so 0 is the training mean and the product is the
    feature's first-order push away from an average user."""
    return top_positive((grad * tabular).detach().numpy(), names, top_k)


def top_positive(contrib: np.ndarray, names: list[str], top_k: int) -> list[list[str]]:
    """Per row of ``contrib`` [B, F] (each feature's push on the purchase logit), the names of the ``top_k``
    largest positive ones, strongest first."""
    order = np.argsort(-contrib, axis=1, kind="stable")[:, :top_k]  # [B, k]
    return [[names[j] for j in row if contrib[i, j] > 0] for i, row in enumerate(order)]


class TorchPredictor:
    """An ``IntentModel`` with the encoder it was trained with, as a ``Predictor``."""

    def __init__(self, model: IntentModel, encoder: FeatureEncoder, model_type: str):
        self.model = model
        self.encoder = encoder
        self.model_type = model_type
        self.feature_columns = encoder.feature_columns
        self.pair_feature_columns = encoder.pair_feature_columns
        self.reads_text = bool(encoder.text_index)
        self.text_encoder = encoder.text_encoder
        self.text_through = encoder.text_through

    def add_texts(self, texts: list[str], vectors: np.ndarray) -> int:
        """Give texts the model has no vector of (queries and category codes that appeared after its training)
        their vectors ([n, text_dim], of ``text_encoder``) so it reads them instead of counting them as no text;
        returns how many were new. A model that reads no text takes none."""
        if not self.reads_text:
            return 0
        if vectors.ndim != 2 or vectors.shape != (len(texts), self.encoder.text_dim):
            raise ValueError(
                f"{len(texts)} texts need vectors [{len(texts)}, {self.encoder.text_dim}], got {vectors.shape}"
            )
        new = [i for i, t in enumerate(texts) if t not in self.encoder.text_index]
        new = list({texts[i]: i for i in new}.values())  # a text given twice is added once
        if new:
            self.model.embed.append_text_vectors(torch.from_numpy(np.ascontiguousarray(vectors[new], dtype=np.float32)))
            self.encoder = self.encoder.with_more_texts([texts[i] for i in new])
        return len(new)

    def predict_chunk(
        self, users: pd.DataFrame, cand_rows: np.ndarray | None, cand: pd.DataFrame | None, reasons_k: int
    ) -> Prediction:
        batch = self.encoder.encode(users)
        if cand is not None and cand_rows is not None:
            batch.update(self.encoder.encode_candidates(cand_rows, cand))
        reasons = None
        if reasons_k:
            out, grad = self.model.predict_with_tabular_gradient(batch)
            reasons = reasons_from_gradient(grad, batch["tabular"], self.encoder.feature_columns, reasons_k)
        else:
            out = self.model.predict_output(batch)
        return Prediction(out.intent.numpy(), out.category.numpy(), reasons)

    def spec(self) -> dict[str, Any]:
        return {"model_type": self.model_type, "model_config": self.model.cfg.to_dict()}

    def save(self, folder: Path) -> dict[str, str]:
        torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, folder / "weights.pt")
        (folder / "encoder.json").write_text(self.encoder.to_json())
        return {"weights": str(folder / "weights.pt"), "encoder": str(folder / "encoder.json")}


# A family class: an IntentModel subclass or a tasks.models.tabular.TabularIntentModel subclass.
_REGISTRY: dict[str, type] = {}


def register_model(name: str) -> Callable[[type], type]:
    """Register a family's model class under its name, which must be the name of its file in ``families/``."""

    def deco(cls: type) -> type:
        module = cls.__module__.rsplit(".", 1)[-1]
        if module != name:
            raise ValueError(
                f"model family module {cls.__module__} registers {name!r}; a family's name is its file name"
            )
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model type {name!r} registered twice")
        cls.model_type = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        return cls

    return deco


def model_types() -> tuple[str, ...]:
    return family_names()


def model_class(model_type: str) -> Any:
    if model_type not in family_names():
        raise ValueError(f"unknown model type {model_type!r}; known: {', '.join(family_names())}")
    # Importing the family module registers it; done here so base.py has no import cycle with the families.
    importlib.import_module(f"{families.__name__}.{model_type}")
    if model_type not in _REGISTRY:
        raise ValueError(f"model family module {families.__name__}.{model_type} registers no model {model_type!r}")
    return _REGISTRY[model_type]


def family_settings(model_type: str, section: dict[str, Any]) -> dict[str, Any]:
    """The ``models.<model_type>`` config section checked against the family's config dataclass.

    A section holds only the family's own keys (the fields ``IntentModelConfig`` lacks; the shared sizes
    come from ``training``), each of its declared type; value rules are the dataclass's ``__post_init__``.
    """
    family = model_class(model_type)
    cls = family.config_class
    shared = {f.name for f in dataclasses.fields(family.shared_config)}
    own = [f.name for f in dataclasses.fields(cls) if f.name not in shared]
    unknown = sorted(set(section) - set(own))
    if unknown:
        raise ValueError(
            f"models.{model_type}: unknown key(s) {unknown}; {cls.__name__} takes {own or 'no keys of its own'}"
        )
    hints = typing.get_type_hints(cls)
    for key, value in section.items():
        try:
            TypeAdapter(hints[key]).validate_python(value, strict=True)
        except ValidationError as e:
            raise ValueError(f"models.{model_type}.{key}: {e.errors()[0]['msg']} (got {value!r})") from None
    return dict(section)


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
