"""The daily cutoffs of a training set, split by time into train / validation / test.

Pure date arithmetic on the config, with no Spark: the training-set builder uses it to decide what to
build, and the training DAG's skip decision uses it to know which cutoffs a run would train on before
building anything.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tasks.config import PipelineConfig

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CutoffPlan:
    train: tuple[dt.date, ...]
    val: tuple[dt.date, ...]
    test: tuple[dt.date, ...]
    dropped: tuple[dt.date, ...]

    @property
    def first(self) -> dt.date:
        return self.train[0]

    @property
    def last(self) -> dt.date:
        return self.test[-1]

    def split_of(self) -> dict[dt.date, str]:
        return {d: s for s in SPLITS for d in getattr(self, s)}

    def as_manifest(self) -> dict[str, list[str]]:
        """The ``cutoffs`` entry of a training set's manifest.json."""
        return {s: [d.isoformat() for d in getattr(self, s)] for s in SPLITS}


def plan_cutoffs(cfg: PipelineConfig, last_cutoff: dt.date) -> CutoffPlan:
    """The cutoffs of each split, ending at ``last_cutoff``, with h - 1 days left out between splits."""
    t, h = cfg.training_set, cfg.features.horizon_days
    gap = h - 1
    sizes = [t.n_train_cutoffs, gap, t.n_val_cutoffs, gap, t.n_test_cutoffs]
    first = last_cutoff - dt.timedelta(days=sum(sizes) - 1)
    days = [first + dt.timedelta(days=i) for i in range(sum(sizes))]
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    part = [tuple(days[bounds[i] : bounds[i + 1]]) for i in range(len(sizes))]
    return CutoffPlan(train=part[0], val=part[2], test=part[4], dropped=part[1] + part[3])


def default_id(plan: CutoffPlan) -> str:
    return f"cutoffs_{plan.first.isoformat()}_{plan.last.isoformat()}"
