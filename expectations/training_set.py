"""Expectation suite of one training set (training_sets/<id>/), checked before training reads it.

The three splits are read together with a ``_split`` column, so the checks look at the data itself, not
only at ``manifest.json``: no cutoff (ds) in two splits; splits in time order, each starting at least
the horizon the set was built with (manifest ``horizon_days``) after the previous one ends (no label
window shared across splits); every split non-empty with both label_purchase classes; one row per
(ds, user); 0/1 labels and positive weights; every cutoff of a split listed under that split in the manifest;
and, in a set built with text, no event text that matches a ``cleaning.pii_patterns`` pattern.
"""

from __future__ import annotations

import json
from functools import reduce
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe

from expectations.features import pii_query
from expectations.runner import DataQualityError, ValidationSummary
from tasks.config import PipelineConfig
from tasks.cutoffs import SPLITS
from tasks.layers import training_set_dir, training_set_manifest, training_set_split
from tasks.schema import LABEL_COLUMNS, SEQUENCE_TEXT_COLUMN

SPLIT_COLUMN = "_split"


def partition(cfg: PipelineConfig, training_set_id: str) -> Path:
    return training_set_dir(cfg, training_set_id)


def read(spark, cfg: PipelineConfig, training_set_id: str):
    """User rows of the three splits, each tagged with its split name in ``_split``."""
    from pyspark.sql import functions as F

    root = partition(cfg, training_set_id)
    frames = []
    for s in SPLITS:
        folder = training_set_split(root, s)
        if folder.is_dir() and any(folder.glob("*.parquet")):
            frames.append(spark.read.parquet(str(folder)).withColumn(SPLIT_COLUMN, F.lit(s)))
    if not frames:
        raise _error(training_set_id, f"{root} has no Parquet files in any of {', '.join(SPLITS)}/")
    # A split missing a column still reads (as nulls) so the suite can name what is wrong with it.
    return reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)


def _error(training_set_id: str, note: str) -> DataQualityError:
    return DataQualityError(
        ValidationSummary(
            name=f"training_set_{training_set_id}",
            success=False,
            n_expectations=0,
            failures=(),
            data_docs=None,
            note=note,
        )
    )


def manifest(cfg: PipelineConfig, training_set_id: str) -> dict:
    path = training_set_manifest(partition(cfg, training_set_id))
    if not path.is_file():
        raise _error(training_set_id, f"{path} is missing: not a complete training set")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise _error(training_set_id, f"{path} is not valid JSON: {e}") from None


def build_suite(cfg: PipelineConfig, training_set_id: str) -> gx.ExpectationSuite:
    recorded = manifest(cfg, training_set_id)
    cutoffs = recorded.get("cutoffs", {})
    # A set may be built with another horizon than the config's (the training DAG's `horizon` parameter).
    h = int(recorded.get("horizon_days", cfg.features.horizon_days))
    listed = (
        " OR ".join(
            f"({SPLIT_COLUMN} = '{s}' AND ds IN ({', '.join(f'DATE {d!r}' for d in cutoffs.get(s, []))}))"
            for s in SPLITS
            if cutoffs.get(s)
        )
        or "false"
    )
    bad_labels = " OR ".join(f"{c} IS NULL OR {c} NOT IN (0, 1)" for c in LABEL_COLUMNS)
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="ds"),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["ds", "user_id"]),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(
                "/* split empty or without both label_purchase classes */ "
                "SELECT s.split, count(b.user_id) AS rows, coalesce(sum(b.label_purchase), 0) AS positives "
                "FROM (SELECT explode(array('train', 'val', 'test')) AS split) s "
                f"LEFT JOIN {{batch}} b ON b.{SPLIT_COLUMN} = s.split GROUP BY s.split "
                "HAVING rows = 0 OR positives = 0 OR positives = rows"
            )
        ),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(
                "/* cutoff in more than one split */ "
                f"SELECT ds, sort_array(collect_set({SPLIT_COLUMN})) AS splits FROM {{batch}} "
                f"GROUP BY ds HAVING count(DISTINCT {SPLIT_COLUMN}) > 1"
            )
        ),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(
                f"/* splits out of time order or less than horizon_days={h} apart */ "
                f"WITH r AS (SELECT {SPLIT_COLUMN} AS split, min(ds) AS first, max(ds) AS last "
                f"FROM {{batch}} GROUP BY {SPLIT_COLUMN}) "
                "SELECT a.split AS earlier, a.last, b.split AS later, b.first FROM r a JOIN r b "
                "ON (a.split = 'train' AND b.split IN ('val', 'test')) OR (a.split = 'val' AND b.split = 'test') "
                f"WHERE datediff(b.first, a.last) < {h}"
            )
        ),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(
                "/* labels null or not 0/1, or weight not positive */ "
                f"SELECT {SPLIT_COLUMN}, ds, user_id, weight, {', '.join(LABEL_COLUMNS)} FROM {{batch}} "
                f"WHERE {bad_labels} OR weight IS NULL OR NOT weight > 0"
            )
        ),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(
                "/* cutoff not listed under its split in manifest.json */ "
                f"SELECT {SPLIT_COLUMN}, ds, count(*) AS rows FROM {{batch}} WHERE NOT ({listed}) "
                f"GROUP BY {SPLIT_COLUMN}, ds"
            )
        ),
    ]
    if (recorded.get("text") or {}).get("texts"):
        # Its texts come from cleaned events; a text that still holds personal data would be encoded into the
        # set's texts/ and packaged with every model trained on it.
        expectations.append(pii_query(cfg, SEQUENCE_TEXT_COLUMN))
    return gx.ExpectationSuite(name=f"training_set_{training_set_id}", expectations=expectations)
