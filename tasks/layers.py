"""The data catalog: where every layer lives and how its partitions are named, declared once.

Every step reads and writes its layers through these functions instead of joining path pieces itself,
so a layer's root or partition naming changes here and nowhere else (``docs/data-layers.md`` describes
the layers and which step writes each). Plain ``pathlib``: no Spark, Great Expectations or torch import,
and no file system access except where a function says so.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from tasks.config import PipelineConfig

DataLayer = Literal[
    "raw", "events", "quarantine", "text_embeddings", "features", "training_sets", "scores", "scores_shadow", "realized"
]
DATA_LAYERS: tuple[str, ...] = get_args(DataLayer)

# Hive-style partition keys: Spark's partitionBy writes them and its reader turns them back into columns.
DAY_KEY = "dt"  # a calendar day of events (raw, events, quarantine, incoming)
CUTOFF_KEY = "ds"  # a cutoff / logical date (features, scores)
SOURCE_KEY = "source"  # the exporter a raw file came from

FeatureTable = Literal["user", "user_category"]
FEATURE_TABLES: tuple[str, ...] = get_args(FeatureTable)

# Whose scores: the champion's reach readers (scores/, intent_scores); the challenger's stay in the shadow
# (scores_shadow/, the warehouse's shadow table), judged on realized outcomes only.
ScoringRole = Literal["champion", "challenger"]
SCORING_ROLES: tuple[str, ...] = get_args(ScoringRole)

TRAINING_SET_MANIFEST = "manifest.json"
# Sub-folder of a training set holding the user x category candidate rows of each split.
TRAINING_SET_CANDIDATES = "user_category"

# Under paths.gx_dir: the JSON outcome of every validation run (tasks.validation_results).
VALIDATION_RESULTS_DIR = "results"


def _day_text(value: dt.date | str) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def partition_name(key: str, value: dt.date | str) -> str:
    """``<key>=<value>``, a date as YYYY-MM-DD: the folder name of one Hive-style partition."""
    return f"{key}={_day_text(value)}"


def partition_dir(root: Path, key: str, value: dt.date | str) -> Path:
    """The folder of partition ``key=value`` under ``root``."""
    return Path(root) / partition_name(key, value)


def partition_day(folder_name: str, key: str) -> dt.date | None:
    """The date of a partition folder named ``<key>=YYYY-MM-DD``; None for any other name."""
    m = re.fullmatch(rf"{re.escape(key)}=(\d{{4}}-\d{{2}}-\d{{2}})", folder_name)
    return dt.date.fromisoformat(m.group(1)) if m else None


def layer_root(cfg: PipelineConfig, name: DataLayer) -> Path:
    """Root folder of one named data layer (under ``paths.var_dir``/data); unknown names are refused."""
    if name not in DATA_LAYERS:
        raise ValueError(f"unknown data layer {name!r}; known: {', '.join(DATA_LAYERS)}")
    return cfg.paths.data / name


# Drop zone (outside the layers): files as delivered, one folder per source and day.
def incoming_dir(cfg: PipelineConfig, source: str) -> Path:
    return cfg.paths.incoming / source


def incoming_partition(cfg: PipelineConfig, source: str, day: dt.date) -> Path:
    """``<incoming>/<source>/dt=<day>/``."""
    return partition_dir(incoming_dir(cfg, source), DAY_KEY, day)


def raw_partition(cfg: PipelineConfig, source: str, day: dt.date) -> Path:
    """``raw/source=<source>/dt=<day>/``: the byte copies of one delivered day."""
    return partition_dir(partition_dir(layer_root(cfg, "raw"), SOURCE_KEY, source), DAY_KEY, day)


# Raw partitions replaced by a corrected re-delivery (tasks.land --redeliver) are kept here, never deleted:
# beside the raw layer, not in it, so no reader of raw/ sees them.
SUPERSEDED_DIR = "superseded"


def superseded_dir(cfg: PipelineConfig, source: str, day: dt.date) -> Path:
    """``superseded/source=<source>/dt=<day>/``: per raw copy a re-delivery replaced, a numbered folder (1, 2, ...)
    holding its files and beside it the re-delivery's record ``<n>.json`` (``redelivery_record``)."""
    return partition_dir(partition_dir(cfg.paths.data / SUPERSEDED_DIR, SOURCE_KEY, source), DAY_KEY, day)


def redelivery_record(copy: Path) -> Path:
    """The JSON record of the re-delivery that superseded the raw ``copy`` (``<n>/`` -> ``<n>.json``)."""
    return Path(copy).with_name(f"{Path(copy).name}.json")


def superseded_copies(cfg: PipelineConfig, source: str, day: dt.date) -> list[Path]:
    """The superseded raw copies of one day (their records included), oldest first; reads the file system."""
    folder = superseded_dir(cfg, source, day)
    numbers = {p.name.removesuffix(".json") for p in folder.iterdir()} if folder.is_dir() else set()
    return [folder / n for n in sorted((n for n in numbers if n.isdigit()), key=int)]


def events_root(cfg: PipelineConfig) -> Path:
    return layer_root(cfg, "events")


def events_partition(cfg: PipelineConfig, day: dt.date) -> Path:
    """``events/dt=<day>/``."""
    return partition_dir(events_root(cfg), DAY_KEY, day)


def quarantine_root(cfg: PipelineConfig) -> Path:
    return layer_root(cfg, "quarantine")


def quarantine_partition(cfg: PipelineConfig, day: dt.date) -> Path:
    """``quarantine/dt=<day>/``."""
    return partition_dir(quarantine_root(cfg), DAY_KEY, day)


ENCODER_KEY = "encoder"  # the text encoder that made a vector: <name>-<first 12 hex digits of its weights' hash>
ENCODER_RECORD = "_encoder.json"  # "_": readers of the layer (Spark, pyarrow) skip it


def text_embeddings_root(cfg: PipelineConfig, encoder: str) -> Path:
    """``text_embeddings/encoder=<encoder>/``: one vector per distinct normalised text, for one encoder."""
    return layer_root(cfg, "text_embeddings") / partition_name(ENCODER_KEY, encoder)


def text_embeddings_partition(cfg: PipelineConfig, encoder: str, day: dt.date) -> Path:
    """``.../dt=<day>/``: the texts first encoded from the events of ``day``."""
    return partition_dir(text_embeddings_root(cfg, encoder), DAY_KEY, day)


def text_encoder_record(cfg: PipelineConfig, encoder: str) -> Path:
    """The encoder's identity (name, weights hash, dimension) beside its vectors."""
    return text_embeddings_root(cfg, encoder) / ENCODER_RECORD


def features_root(cfg: PipelineConfig, table: FeatureTable) -> Path:
    """``features/<table>/``, the root a ``partitionBy("ds")`` write goes to."""
    if table not in FEATURE_TABLES:
        raise ValueError(f"unknown features table {table!r}; known: {', '.join(FEATURE_TABLES)}")
    return layer_root(cfg, "features") / table


def features_partition(cfg: PipelineConfig, table: FeatureTable, ds: dt.date) -> Path:
    """``features/<table>/ds=<ds>/``."""
    return partition_dir(features_root(cfg, table), CUTOFF_KEY, ds)


def training_sets_root(cfg: PipelineConfig) -> Path:
    return layer_root(cfg, "training_sets")


def training_set_dir(cfg: PipelineConfig, training_set_id: str) -> Path:
    """``training_sets/<id>/``."""
    return training_sets_root(cfg) / training_set_id


def training_set_split(set_dir: Path, split: str) -> Path:
    """``<set>/<split>/``: the user rows of one split (train, val, test)."""
    return Path(set_dir) / split


def training_set_candidates(set_dir: Path, split: str) -> Path:
    """``<set>/user_category/<split>/``: the candidate-category rows of one split."""
    return Path(set_dir) / TRAINING_SET_CANDIDATES / split


def training_set_texts(set_dir: Path) -> Path:
    """``<set>/texts/``: (text, vector) of every text of the set's rows, with text.enabled."""
    return Path(set_dir) / "texts"


def training_set_manifest(set_dir: Path) -> Path:
    return Path(set_dir) / TRAINING_SET_MANIFEST


def check_role(role: str) -> str:
    """``role`` if it is a scoring role; a ValueError naming the known ones otherwise."""
    if role not in SCORING_ROLES:
        raise ValueError(f"unknown scoring role {role!r}; known: {', '.join(SCORING_ROLES)}")
    return role


def scores_root(cfg: PipelineConfig, role: ScoringRole = "champion") -> Path:
    return layer_root(cfg, "scores" if check_role(role) == "champion" else "scores_shadow")


def scores_partition(cfg: PipelineConfig, ds: dt.date, role: ScoringRole = "champion") -> Path:
    """``scores/ds=<ds>/`` (the champion's) or ``scores_shadow/ds=<ds>/`` (the challenger's): the staging rows the
    warehouse load reads."""
    return partition_dir(scores_root(cfg, role), CUTOFF_KEY, ds)


def realized_partition(cfg: PipelineConfig, ds: dt.date, role: ScoringRole) -> Path:
    """``realized/ds=<ds>/role=<role>/``: each scored user's p_purchase beside what they did in the label window,
    written by spark_jobs.outcomes; the live comparison of champion and challenger reads it."""
    return partition_dir(layer_root(cfg, "realized"), CUTOFF_KEY, ds) / partition_name("role", check_role(role))


# Outside the layers, under paths.var_dir.
def drift_report(cfg: PipelineConfig, ds: dt.date) -> Path:
    """``runs/drift/<ds>.json``: the nightly feature-drift report of a cutoff."""
    return cfg.paths.runs_dir / "drift" / f"{ds.isoformat()}.json"


def drift_reference_profile(cfg: PipelineConfig, key: str) -> Path:
    """``runs/drift/reference/<key>.json``: the profile of a drift reference (bin edges and counts, top
    categories), kept so that later nights do not read the reference again; ``key`` names its files and the
    drift settings (spark_jobs.drift.profile_key)."""
    return cfg.paths.runs_dir / "drift" / "reference" / f"{key}.json"


def health_report(cfg: PipelineConfig, ds: dt.date) -> Path:
    """``runs/health/<ds>.json``: the champion's health at a cutoff (tasks.monitoring.nightly_health)."""
    return cfg.paths.runs_dir / "health" / f"{ds.isoformat()}.json"


def run_summaries_root(cfg: PipelineConfig) -> Path:
    """``runs/summary/``: one folder per DAG with the summary of each of its runs (tasks.run_summary)."""
    return cfg.paths.runs_dir / "summary"


def run_summary(cfg: PipelineConfig, dag_id: str, ds: dt.date | str) -> Path:
    """``runs/summary/<dag_id>/<ds>.json``: the outcome of a DAG's run for logical date ``ds`` (a rerun replaces it)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", dag_id):
        raise ValueError(f"not a DAG id: {dag_id!r}")
    return run_summaries_root(cfg) / dag_id / f"{_day_text(ds)}.json"


def validation_result_in(gx_dir: Path, layer: str, key: str) -> Path:
    """``<gx_dir>/results/<layer>_<key>.json`` (characters outside [A-Za-z0-9_.-] become "_")."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{layer}_{key}")
    return Path(gx_dir) / VALIDATION_RESULTS_DIR / f"{name}.json"


def data_docs_site(gx_dir: Path) -> Path:
    """The Data Docs site the file-backed GX project under ``gx_dir`` renders (``index.html`` inside); GX's layout."""
    return Path(gx_dir) / "gx" / "uncommitted" / "data_docs" / "local_site"


def validation_result(cfg: PipelineConfig, layer: str, key: str) -> Path:
    """Where the outcome of validating ``layer``'s partition ``key`` is stored."""
    return validation_result_in(cfg.paths.gx_dir, layer, key)


def class_archive_path(cfg: PipelineConfig) -> Path | None:
    """Where ``spark.class_archive`` lives (None when switched off); see spark_jobs.class_archive."""
    if not cfg.spark.class_archive:
        return None
    path = Path(cfg.spark.class_archive)
    return path if path.is_absolute() else cfg.paths.var / path
