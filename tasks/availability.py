"""Whether the partitions a run needs exist, checked from folder names before any JVM or torchrun starts.

A run whose logical date lies past the delivered data (the Airflow trigger form's default is "now")
stops at its first task with one line that names the missing days and the newest day that does exist,
e.g. ``no events landed for 2026-12-01 (...); newest cleaned day is 2026-01-14``. The error is a
``NoDataError``: retrying cannot make the data appear.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.errors import NoDataError
from tasks.layers import DAY_KEY, events_root, partition_day

if TYPE_CHECKING:
    from tasks.config import PipelineConfig

_ONE_DAY = dt.timedelta(days=1)


def day_folders(root: Path, *, parquet: bool = False) -> dict[dt.date, Path]:
    """``dt=<day>`` folders directly under ``root`` (with ``parquet``: only those holding a Parquet file)."""
    found: dict[dt.date, Path] = {}
    if not Path(root).is_dir():
        return found
    for child in Path(root).iterdir():
        day = partition_day(child.name, DAY_KEY)
        if day is not None and child.is_dir() and (not parquet or any(child.glob("*.parquet"))):
            found[day] = child
    return found


def event_days(cfg: PipelineConfig) -> list[dt.date]:
    """Days with a cleaned events partition (one that holds Parquet files), oldest first."""
    return sorted(day_folders(events_root(cfg), parquet=True))


def days_text(days: Iterable[dt.date], limit: int = 4) -> str:
    """``2026-01-05``, ``2026-01-05..2026-01-09`` (consecutive) or ``2026-01-05, 2026-01-08 and 3 more``."""
    ds = sorted(set(days))
    if not ds:
        return "(none)"
    if len(ds) > 1 and (ds[-1] - ds[0]).days == len(ds) - 1:
        return f"{ds[0]}..{ds[-1]}"
    shown = ", ".join(map(str, ds[:limit]))
    return shown if len(ds) <= limit else f"{shown} and {len(ds) - limit} more"


def newest_text(days: list[dt.date], what: str, root: Path) -> str:
    """``newest <what> day is D`` or, for an empty layer, that it holds nothing yet."""
    return f"newest {what} day is {max(days)}" if days else f"no {what} day exists yet under {root}"


def require_event_days(cfg: PipelineConfig, days: Iterable[dt.date], purpose: str) -> None:
    """Raise ``NoDataError`` naming every day of ``days`` without a cleaned events partition."""
    present = event_days(cfg)
    have = set(present)
    missing = [d for d in days if d not in have]
    if missing:
        raise NoDataError(
            f"no events landed for {days_text(missing)} ({purpose}); "
            f"{newest_text(present, 'cleaned', events_root(cfg))}"
        )


def training_event_days(cfg: PipelineConfig, last_cutoff: dt.date) -> list[dt.date]:
    """Every events day a training set ending at ``last_cutoff`` reads whole: the day before its first cutoff
    (history) through the last day of the last cutoff's label window."""
    from tasks.cutoffs import plan_cutoffs

    plan = plan_cutoffs(cfg, last_cutoff)
    first = plan.first - _ONE_DAY
    label_end = plan.last + dt.timedelta(days=cfg.features.horizon_days - 1)
    return [first + dt.timedelta(days=i) for i in range((label_end - first).days + 1)]


def missing_training_events(cfg: PipelineConfig, last_cutoff: dt.date) -> str | None:
    """Why the events layer cannot give a training set ending at ``last_cutoff``; None when it can.

    The last cutoff's label window is named first (a logical date past the data), then gaps in the cutoffs'
    label days, then the history day before the first cutoff.
    """
    from tasks.cutoffs import plan_cutoffs

    present = event_days(cfg)
    have = set(present)
    plan = plan_cutoffs(cfg, last_cutoff)
    h = cfg.features.horizon_days
    newest = newest_text(present, "cleaned", events_root(cfg))
    window = [plan.last + dt.timedelta(days=i) for i in range(h)]
    if missing := [d for d in window if d not in have]:
        hint = f"; choose a logical date up to {max(present) + _ONE_DAY}" if present else ""
        return (
            f"no events landed for {days_text(missing)}: the label window of the last cutoff {plan.last} "
            f"has not fully landed (events partitions missing for {', '.join(map(str, missing))}); {newest}{hint}"
        )
    label_end = window[-1]
    needed = [plan.first + dt.timedelta(days=i) for i in range((label_end - plan.first).days + 1)]
    if missing := [d for d in needed if d not in have]:
        return (
            f"no events landed for {days_text(missing)}: cutoffs {plan.first}..{plan.last} need every events day "
            f"{plan.first}..{label_end} for labels; missing: {', '.join(map(str, missing))}"
        )
    history = plan.first - _ONE_DAY
    if history not in have:
        return (
            f"no events landed for {history}: the earliest cutoff {plan.first} has no history: events partition "
            f"{DAY_KEY}={history} is missing (use a later logical date / --last-cutoff or fewer cutoffs)"
        )
    return None


def require_training_events(cfg: PipelineConfig, last_cutoff: dt.date) -> None:
    """``NoDataError`` unless every events day of the training set ending at ``last_cutoff`` exists."""
    reason = missing_training_events(cfg, last_cutoff)
    if reason:
        raise NoDataError(reason)


def require_raw_day(cfg: PipelineConfig, source: str, day: dt.date) -> None:
    """``NoDataError`` unless the raw layer holds ``source``'s landed partition of ``day``."""
    from tasks.layers import raw_partition

    folder = raw_partition(cfg, source, day)
    if not folder.is_dir():
        landed = sorted(day_folders(folder.parent))
        raise NoDataError(
            f"no raw data landed for {source} {day}: raw partition {folder} does not exist (land the day first); "
            f"{newest_text(landed, 'landed', folder.parent)}"
        )
