"""Column contracts shared by the Spark jobs, the expectation suites, the models and the warehouse.

Plain Python (no Spark import) so DAG files, GX suites and model code can read it cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.config import FeaturesConfig

# Canonical event types, in the order used for integer encodings (index 0 is padding).
EVENT_TYPES = ("view", "cart", "fav", "purchase")
EVENT_TYPE_INDEX = {name: i + 1 for i, name in enumerate(EVENT_TYPES)}

# Source labels that are excluded from canonical events by a documented rule (not errors):
# REES46 `remove_from_cart` carries no purchase intent of its own and has no canonical type;
# such rows go to quarantine with reason "excluded_event_type" and do not count as bad rows.
EXCLUDED_RAW_EVENT_TYPES = ("remove_from_cart",)

# Canonical events layer (events/dt=YYYY-MM-DD/), Spark SQL types.
EVENT_COLUMNS = {
    "event_time": "timestamp",  # UTC instant
    "user_id": "string",
    "item_id": "string",
    "category_id": "string",
    "event_type": "string",  # one of EVENT_TYPES
    "price": "double",  # optional, >= 0
    "session_id": "string",  # optional
    "query": "string",  # optional search text
    "brand": "string",  # optional
    "category_code": "string",  # optional, e.g. electronics.smartphone
}
REQUIRED_EVENT_COLUMNS = ("event_time", "user_id", "item_id", "category_id", "event_type")
# The key that identifies one event; exact duplicates on all columns are removed by cleaning.
EVENT_KEY = ("event_time", "user_id", "item_id", "event_type")

# Quarantine reasons, most specific first (a row gets the first that applies).
QUARANTINE_REASONS = (
    "malformed_line",
    "null_user_id",
    "null_item_id",
    "null_category_id",
    "ambiguous_time_zone",
    "unparseable_timestamp",
    "excluded_event_type",
    "unknown_event_type",
    "bad_price",
    "negative_price",
    "future_timestamp",
    "outside_partition",
)
# A price above this (or a non-finite one, e.g. ``1e999`` parses to +inf) is an export error in any currency
# (quarantined as ``bad_price``); letting it through would make price features inf or meaningless downstream.
MAX_PRICE = 1e9
# Reasons that are a documented exclusion, not a data error (do not count towards max_bad_fraction).
NON_ERROR_REASONS = ("excluded_event_type",)

# Intent heads of every model, in this order in logits/probabilities: [B, len(INTENTS)].
INTENTS = ("purchase", "cart", "fav")
LABEL_COLUMNS = tuple(f"label_{i}" for i in INTENTS)
PROBABILITY_COLUMNS = tuple(f"p_{i}" for i in INTENTS)

# User x category candidate rows (features/user_category/, training_sets/<id>/user_category/): the
# key columns plus f_uc_* pair features; the label marks a purchase in that category in the horizon.
CANDIDATE_CATEGORY_COLUMN = "category_id"
USER_CATEGORY_LABEL = "label_purchase_in_category"
# Scoring hands a user's candidates to the model as parallel array columns on the user row:
# cand_category_id (array<string>) and cand_<f_uc_*> (array<double>), one element per candidate.
CANDIDATE_ARRAY_PREFIX = "cand_"
CANDIDATE_ARRAY_CATEGORY = CANDIDATE_ARRAY_PREFIX + CANDIDATE_CATEGORY_COLUMN

# Sequence columns of the user-level features layer: arrays of equal length <= L,
# oldest event first. seq_category holds raw category ids (the model's vocabulary maps them).
SEQUENCE_COLUMNS = (
    "seq_event_type",  # array<int>, EVENT_TYPE_INDEX
    "seq_category",  # array<string>, raw category_id
    "seq_item_bucket",  # array<int>, 1 + hash(item_id) mod features.item_buckets
    "seq_gap_cutoff_bucket",  # array<int>, log2 bucket of seconds to the cutoff
    "seq_gap_prev_bucket",  # array<int>, log2 bucket of seconds since the previous event
    "seq_hour",  # array<int>, hour of day in pipeline.timezone (0..23)
)
# With text.enabled, the user rows also carry seq_text (array<string>, parallel to the sequence columns: the
# normalised text of each event, its search query or else its category code; "" where it has neither) and the
# candidate rows category_text (the candidate category's normalised code, or ""), whose vectors the training
# set holds.
SEQUENCE_TEXT_COLUMN = "seq_text"
CANDIDATE_TEXT_COLUMN = "category_text"
CANDIDATE_ARRAY_TEXT = CANDIDATE_ARRAY_PREFIX + CANDIDATE_TEXT_COLUMN  # array<string> on user rows
# Tabular feature columns are every column whose name starts with this prefix (double).
TABULAR_PREFIX = "f_"
# Hour-of-day blocks (local time, inclusive bounds) of the f_hour_share_<block> features.
HOUR_BLOCKS = {"night": (0, 5), "morning": (6, 11), "afternoon": (12, 17), "evening": (18, 23)}


def tabular_columns(fcfg: FeaturesConfig) -> list[str]:
    """The f_* columns of the user features layer (spark_jobs.features.user_features), in output order."""
    cols = [f"f_{t}_{w}d" for w in fcfg.windows_days for t in EVENT_TYPES]
    cols += [f"f_recency_{t}" for t in EVENT_TYPES] + ["f_recency_any"]
    cols += ["f_distinct_items", "f_distinct_categories", "f_active_days"]
    cols += ["f_cart_per_view", "f_purchase_per_cart", "f_fav_per_view"]
    cols += ["f_sessions", "f_session_events_mean", "f_session_duration_mean"]
    cols += [f"f_hour_share_{b}" for b in HOUR_BLOCKS] + ["f_weekend_share"]
    cols += ["f_price_known_share", "f_price_mean", "f_price_max", "f_purchase_amount"]
    cols += ["f_trend_1d_vs_7d"]
    return cols


def user_category_columns(fcfg: FeaturesConfig) -> list[str]:
    """The f_uc_* pair-feature columns of the user x category candidate rows, in output order."""
    cols = [f"f_uc_{t}_{w}d" for w in fcfg.windows_days for t in EVENT_TYPES]
    cols += [f"f_uc_recency_{t}" for t in EVENT_TYPES] + ["f_uc_recency_any", "f_uc_share"]
    return cols


# Optional explanation columns of a score row: the user's most likely categories ("<category_id>:<probability>",
# best first) and the tabular features that most raised p_purchase (strongest first).
TOP_CATEGORIES_COLUMN = "top_categories"
REASONS_COLUMN = "reasons"

# Warehouse table intent_scores (one partition = all rows of one ds).
SCORE_COLUMNS = {
    "ds": "date",
    "user_id": "string",
    "p_purchase": "double",
    "p_cart": "double",
    "p_fav": "double",
    "model_name": "string",
    "model_version": "string",
    "model_run_id": "string",
    "scored_at": "timestamp",  # the run's logical date, never now()
    "pipeline_run_id": "string",
}

# Warehouse table of realized outcomes (tasks.outcomes): one row per scored ds, model version and scoring role,
# written once the label window [ds, ds + horizon) has closed. Ranking metrics are NULL where a day has a
# single class (undefined, not zero).
OUTCOME_COLUMNS = {
    "ds": "date",  # the scored cutoff
    "model_name": "string",
    "model_version": "string",
    "role": "string",  # champion: the scores in intent_scores
    "horizon_days": "bigint",
    "n_users": "bigint",  # users scored for ds by this version
    "n_buyers": "bigint",  # of them, users who bought in [ds, ds + horizon)
    "n_buyers_unscored": "bigint",  # buyers in the window that no score row covered (new users)
    "purchase_rate": "double",
    "mean_p_purchase": "double",
    "purchase_roc_auc": "double",
    "purchase_pr_auc": "double",
    "purchase_log_loss": "double",
    "purchase_brier": "double",
    "purchase_ece": "double",  # expected calibration error over the reliability bins
    "cart_roc_auc": "double",
    "cart_pr_auc": "double",
    "fav_roc_auc": "double",
    "fav_pr_auc": "double",
    "top_fraction": "double",  # share of highest-scored users that precision_top / recall_top read
    "precision_top": "double",
    "recall_top": "double",
    "lift_by_decile": "array<double>",  # buyer rate per p_purchase decile (highest first) over the overall rate
    "reliability_predicted": "array<double>",  # mean p_purchase per equal-mass bin, ascending
    "reliability_observed": "array<double>",  # buyer rate in the same bins
    "category_k": "bigint",  # k of category_hit_rate / category_ndcg, read from top_categories
    "category_users": "bigint",  # buyers with a purchase in a category of their lookback (the ones ranked)
    "category_hit_rate": "double",
    "category_ndcg": "double",
    "evaluated_at": "timestamp",  # the evaluating run's logical date, never now()
    "pipeline_run_id": "string",
}
OUTCOME_KEY = ("ds", "model_name", "model_version", "role")
