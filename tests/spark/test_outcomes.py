"""spark_jobs.outcomes: realized metrics appear once a scored day's label window closes, exactly once per rerun."""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_jobs.outcomes import run
from tasks.layers import features_partition, realized_partition, scores_partition
from tasks.warehouse import Warehouse, load_scores
from tests.helpers.events import ev, write_events_layer

D10, D11, D12, D13 = (dt.date(2026, 1, d) for d in (10, 11, 12, 13))


def _stage_scores(
    cfg, ds: dt.date, rows: list[tuple[str, float, list[str] | None]], role: str = "champion", version: str = "4"
) -> None:
    """Score rows as spark_jobs.score stages them (user, p_purchase, top_categories), loaded into the warehouse."""
    n = len(rows)
    table = pa.table(
        {
            "user_id": [u for u, _, _ in rows],
            "p_purchase": [p for _, p, _ in rows],
            "p_cart": [0.5] * n,
            "p_fav": [0.2] * n,
            "model_name": ["purchase_intent"] * n,
            "model_version": [version] * n,
            "model_run_id": ["r"] * n,
            "scored_at": pa.array([dt.datetime.combine(ds, dt.time(), tzinfo=dt.UTC)] * n, pa.timestamp("us", "UTC")),
            "pipeline_run_id": ["test"] * n,
            "top_categories": pa.array([t for _, _, t in rows], pa.list_(pa.string())),
            "reasons": pa.array([None] * n, pa.list_(pa.string())),
        }
    )
    folder = scores_partition(cfg, ds, role)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-0.parquet")
    load_scores(cfg, ds, role)


def _candidates(cfg, ds: dt.date, pairs: list[tuple[str, str]]) -> None:
    folder = features_partition(cfg, "user_category", ds)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({"user_id": [u for u, _ in pairs], "category_id": [c for _, c in pairs]}), folder / "part-0.parquet"
    )


def _monitoring_runs(cfg):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    exp = client.get_experiment_by_name(cfg.mlflow.monitoring_experiment)
    return client, ([] if exp is None else client.search_runs([exp.experiment_id]))


@pytest.fixture
def scored(cfg):
    """Scores of ds 11 and 12; events of day 10 (lookback) and day 11 (the label window of ds 11) only."""
    write_events_layer(
        cfg,
        [
            ev("2026-01-10T09:00", "u1", category_id="c1"),
            ev("2026-01-10T09:00", "u2", category_id="c2"),
            # Day 11: u1 buys in c2 (a lookback category of theirs), u3 buys in c1 and carts, u9 (never scored) buys.
            ev("2026-01-11T10:00", "u1", category_id="c2", event_type="purchase"),
            ev("2026-01-11T10:00", "u3", category_id="c1", event_type="purchase"),
            ev("2026-01-11T11:00", "u3", category_id="c1", event_type="cart"),
            ev("2026-01-11T12:00", "u2", category_id="c2"),
            ev("2026-01-11T12:00", "u9", category_id="c1", event_type="purchase"),
        ],
    )
    # p_purchase: buyers u1 (0.8) and u3 (0.3); non-buyers u2 (0.6), u4 (0.1) -> ROC-AUC 3/4.
    _stage_scores(
        cfg,
        D11,
        [
            ("u1", 0.8, ["c1:0.6", "c2:0.3"]),
            ("u2", 0.6, ["c2:0.5"]),
            ("u3", 0.3, ["c5:0.4"]),
            ("u4", 0.1, None),
        ],
    )
    _candidates(cfg, D11, [("u1", "c1"), ("u1", "c2"), ("u2", "c2"), ("u3", "c1"), ("u3", "c5")])
    _stage_scores(cfg, D12, [("u1", 0.5, None), ("u2", 0.5, None)])
    return cfg


def test_outcomes_appear_when_the_window_closes_and_a_rerun_keeps_one_copy(spark, scored):
    cfg = scored
    wh = Warehouse.from_config(cfg)
    # At cutoff 11 the window of ds 11 is still open: nothing is judged, and no Spark job is needed.
    report = run(cfg, D11, "night-11")
    assert (report.evaluated, report.rows) == ((), ())
    assert wh.outcome_days() == []

    report = run(cfg, D12, "night-12", spark=spark)
    assert report.evaluated == (D11,)
    assert wh.outcome_days() == [D11]
    (row,) = wh.outcomes(D11)
    assert (row["model_name"], row["model_version"], row["role"]) == ("purchase_intent", "4", "champion")
    assert (row["n_users"], row["n_buyers"], row["n_buyers_unscored"]) == (4, 2, 1)
    assert row["purchase_roc_auc"] == pytest.approx(0.75)
    assert row["purchase_rate"] == 0.5
    # u3 carted: the cart head is judged too (its p_cart is 0.5 for everyone: a tie, AUC 0.5).
    assert row["cart_roc_auc"] == pytest.approx(0.5)
    # Category ranking: u1 bought c2, second in their list (hit at k=5, NDCG 1/log2(3)); u3 bought c1, which
    # their list lacks. u9 bought but was never scored.
    assert (row["category_users"], row["category_hit_rate"]) == (2, 0.5)
    assert row["category_ndcg"] == pytest.approx(0.5 / math.log2(3))
    assert row["evaluated_at"] == dt.datetime(2026, 1, 12, tzinfo=dt.UTC)
    assert row["pipeline_run_id"] == "night-12"
    assert len(row["reliability_predicted"]) == 4  # 10 bins asked, 4 users

    # A rerun of the same night replaces the day's rows: one copy, one MLflow run per day and version.
    run(cfg, D12, "night-12-rerun", spark=spark)
    (row,) = wh.outcomes(D11)
    assert row["pipeline_run_id"] == "night-12-rerun"
    client, runs = _monitoring_runs(cfg)
    outcome_runs = [r for r in runs if r.data.tags.get("kind") == "realized_outcomes"]
    assert [(r.data.tags["ds"], r.data.tags["model_version"]) for r in outcome_runs] == [("2026-01-11", "4")]
    assert outcome_runs[0].data.metrics["purchase_roc_auc"] == pytest.approx(0.75)
    (history,) = client.get_metric_history(outcome_runs[0].info.run_id, "purchase_roc_auc")
    assert history.step == D11.toordinal()
    assert history.timestamp == int(dt.datetime(2026, 1, 11, tzinfo=dt.UTC).timestamp() * 1000)
    artifacts = [a.path for a in client.list_artifacts(outcome_runs[0].info.run_id, "outcomes")]
    assert artifacts == ["outcomes/trend.png"]


def test_a_closed_day_waits_for_its_label_events_and_is_judged_when_they_land(spark, scored):
    cfg = scored
    wh = Warehouse.from_config(cfg)
    run(cfg, D12, "night-12", spark=spark)
    # Cutoff 13 closes ds 12, but no events of day 12 have landed: it waits, and is not judged on nothing.
    report = run(cfg, D13, "night-13", spark=spark)
    assert (report.evaluated, report.waiting) == ((), (D12,))
    assert "waiting for label events of 2026-01-12" in report.describe()
    assert wh.outcome_days() == [D11]
    write_events_layer(cfg, [ev("2026-01-12T08:00", "u2", category_id="c2", event_type="purchase")])
    report = run(cfg, D13, "night-13-again", spark=spark)
    assert report.evaluated == (D12,)
    (row,) = wh.outcomes(D12)
    assert (row["n_users"], row["n_buyers"], row["purchase_roc_auc"]) == (2, 1, 0.5)
    # ds 11 kept its rows from the earlier night.
    assert wh.outcomes(D11)[0]["pipeline_run_id"] == "night-12"


def test_a_shadow_challenger_is_judged_on_the_same_day_beside_the_champion(spark, scored):
    cfg = scored
    # The challenger ranks the buyers u1 and u3 above everyone: ROC-AUC 1.
    _stage_scores(
        cfg, D11, [("u1", 0.9, None), ("u2", 0.2, None), ("u3", 0.7, None), ("u4", 0.1, None)], "challenger", "5"
    )
    run(cfg, D12, "night-12", spark=spark)
    champion, challenger = sorted(Warehouse.from_config(cfg).outcomes(D11), key=lambda r: r["role"])[::-1]
    assert (champion["role"], champion["model_version"], champion["purchase_roc_auc"]) == ("champion", "4", 0.75)
    assert (challenger["role"], challenger["model_version"], challenger["purchase_roc_auc"]) == ("challenger", "5", 1.0)
    assert challenger["n_buyers_unscored"] == champion["n_buyers_unscored"] == 1
    # Each scored user's p_purchase beside their purchase, per role, for the live comparison.
    realized = {
        role: pq.read_table(realized_partition(cfg, D11, role)).to_pandas().set_index("user_id").sort_index()
        for role in ("champion", "challenger")
    }
    assert realized["challenger"]["p_purchase"].to_dict() == {"u1": 0.9, "u2": 0.2, "u3": 0.7, "u4": 0.1}
    assert realized["champion"]["label_purchase"].to_dict() == {"u1": 1, "u2": 0, "u3": 1, "u4": 0}
    assert set(realized["champion"]["model_version"]) == {"4"}
