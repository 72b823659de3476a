"""A seed ensemble (``training.ensemble_seeds``): models of one family trained with different seeds, packaged
as one ``Predictor`` whose probabilities are the mean of its members' calibrated probabilities.

A retrain of a small-data model can move its metrics by seed alone; the mean over K seeds moves much less.
Each member keeps its own calibration (fitted on the validation split like any trained model), so the mean
stays a probability on the same scale. Reasons are the first member's (attributions of different networks
do not average into one model's). The ensemble has its members' ``model_type``: scoring, the selection and
the gate see one model of that family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.models.base import Prediction, Predictor, model_class
from tasks.models.calibration import with_calibration

# Key of a packaged model's spec that lists an ensemble's member specs (absent for a single model).
MEMBERS = "ensemble_members"


def _member_prefix(i: int) -> str:
    return f"member{i}__"


class SeedEnsemble:
    """``members`` (each a ``Predictor``, calibrated) as one ``Predictor``: mean probabilities."""

    def __init__(self, members: list[Predictor]):
        if not members:
            raise ValueError("a seed ensemble needs at least one member")
        first = members[0]
        for m in members[1:]:
            if (m.model_type, m.feature_columns, m.pair_feature_columns) != (
                first.model_type,
                first.feature_columns,
                first.pair_feature_columns,
            ):
                raise ValueError("seed ensemble members must be one family on the same features")
        self.members = members
        self.model_type = first.model_type
        self.feature_columns = first.feature_columns
        self.pair_feature_columns = first.pair_feature_columns
        self.reads_text = getattr(first, "reads_text", False)
        self.text_encoder = getattr(first, "text_encoder", "")
        self.text_through = getattr(first, "text_through", "")

    def add_texts(self, texts: list[str], vectors: np.ndarray) -> int:
        """``TorchPredictor.add_texts`` of every member; how many texts were new to the first."""
        adds = [getattr(m, "add_texts", None) for m in self.members]
        added = [add(texts, vectors) for add in adds if add is not None]
        return added[0] if added else 0

    def predict_chunk(
        self, users: pd.DataFrame, cand_rows: np.ndarray | None, cand: pd.DataFrame | None, reasons_k: int
    ) -> Prediction:
        outs = [m.predict_chunk(users, cand_rows, cand, reasons_k if i == 0 else 0) for i, m in enumerate(self.members)]
        intent = np.mean([o.intent for o in outs], axis=0)  # [B, len(INTENTS)]
        category = np.mean([o.category for o in outs], axis=0)  # [C]
        return Prediction(intent, category, outs[0].reasons)

    def spec(self) -> dict[str, Any]:
        return {"model_type": self.model_type, MEMBERS: [m.spec() for m in self.members]}

    def save(self, folder: Path) -> dict[str, str]:
        artifacts = {}
        for i, m in enumerate(self.members):
            sub = folder / f"member-{i}"
            sub.mkdir()
            artifacts.update({_member_prefix(i) + k: v for k, v in m.save(sub).items()})
        return artifacts

    @classmethod
    def from_artifacts(cls, spec: dict[str, Any], artifacts: dict[str, str]) -> SeedEnsemble:
        members = []
        for i, member in enumerate(spec[MEMBERS]):
            prefix = _member_prefix(i)
            own = {k.removeprefix(prefix): v for k, v in artifacts.items() if k.startswith(prefix)}
            inner = model_class(member["model_type"]).from_artifacts(member, own)
            members.append(with_calibration(inner, own))
        return cls(members)


def load_predictor(spec: dict[str, Any], artifacts: dict[str, str]) -> Predictor:
    """The packaged model's ``Predictor``: a single model or a seed ensemble, behind the calibration packaged
    with it (an ensemble's own, fitted on the validation split to its mean probabilities)."""
    if MEMBERS in spec:
        return with_calibration(SeedEnsemble.from_artifacts(spec, artifacts), artifacts)
    return with_calibration(model_class(spec["model_type"]).from_artifacts(spec, artifacts), artifacts)
