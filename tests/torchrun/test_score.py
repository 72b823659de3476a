"""Bulk scoring with a real (tiny) champion trained by torchrun and registered in MLflow."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow import MlflowClient

from spark_jobs.score import (
    REASONS_COLUMN,
    TOP_CATEGORIES_COLUMN,
    ScoringError,
    main,
    resolve_champion,
    run,
    score_users,
)
from tasks.layers import features_partition, scores_partition
from tasks.registry import mlflow_store
from tasks.schema import PROBABILITY_COLUMNS, SCORE_COLUMNS, SEQUENCE_COLUMNS
from tasks.training.launcher import launch
from tasks.warehouse import Warehouse, load_scores
from tests.helpers.config import isolated_config
from tests.helpers.trainingset import FEATURE_COLUMNS, write_training_set

UNSEEN = "never_seen_cat"

DS = dt.date(2026, 1, 20)
OTHER_DS = dt.date(2026, 1, 21)


def _cfg(var: Path, **scoring):
    return isolated_config(
        var,
        training={"batch_size": 64, "embedding_dim": 8, "hidden_dim": 16},
        scoring={"batch_size": 16, "torch_threads": 1, "reasons_top_k": 2, **scoring},
    )


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    ts = write_training_set(root / "ts", n_users=120, seed=3)
    cfg = _cfg(root / "var")
    result = launch(cfg, ts, model_type="lstm", epochs=1, nproc=1, allow_unvalidated=True)
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    client.set_registered_model_alias(cfg.mlflow.model_name, cfg.mlflow.champion_alias, result.model_version)
    return cfg, ts, result


def _write_features(cfg, ts: Path, ds: dt.date, n: int | None = None) -> pd.DataFrame:
    """The training set's test split as a features partition (Spark layout: ds only in the folder), and
    its candidates as the user_category partition, plus a category never seen in training for the user
    with the fewest candidates."""
    table = pq.read_table(ts / "test").drop_columns(["ds", "weight"])
    if n is not None:
        table = table.slice(0, n)
    out = features_partition(cfg, "user", ds)
    out.mkdir(parents=True, exist_ok=True)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), out / "part-00000.parquet")
    pq.write_table(table.slice(half), out / "part-00001.parquet")
    cand = pq.read_table(ts / "user_category" / "test").to_pandas().drop(columns=["ds"])
    cand = cand[cand["user_id"].isin(table.column("user_id").to_pylist())]
    users = pd.Series(table.column("user_id").to_pylist())
    fewest = users.iloc[int(np.argmin(users.map(cand["user_id"].value_counts()).fillna(0).to_numpy()))]
    extra = cand.head(1).assign(user_id=fewest, category_id=UNSEEN)
    cand = pd.concat([cand, extra], ignore_index=True).assign(label_purchase_in_category=None)
    uc = features_partition(cfg, "user_category", ds)
    uc.mkdir(parents=True, exist_ok=True)
    for old in uc.glob("*.parquet"):
        old.unlink()
    cand.to_parquet(uc / "part-00000.parquet", index=False)
    return table.to_pandas()


def _read_scores(cfg, ds: dt.date) -> pd.DataFrame:
    return pq.read_table(scores_partition(cfg, ds)).to_pandas()


def test_no_champion_is_a_clear_error(tmp_path):
    with pytest.raises(ScoringError, match="run the training DAG"):
        resolve_champion(_cfg(tmp_path / "var"))


def test_resolve_pins_the_version(champion):
    cfg, _, result = champion
    ref = resolve_champion(cfg)
    assert (ref.name, ref.version, ref.run_id) == (cfg.mlflow.model_name, result.model_version, result.run_id)
    assert ref.uri == f"models:/{cfg.mlflow.model_name}/{result.model_version}"
    assert ref.tracking_uri == cfg.mlflow.resolved_tracking_uri


@pytest.fixture(scope="module", params=["lr", "lightgbm"])
def tabular_champion(request, tmp_path_factory):
    """A tabular family trained as a candidate, registered by the selection and promoted by the gate."""
    from tasks.registry import gate, select

    root = tmp_path_factory.mktemp(f"score_{request.param}")
    ts = write_training_set(root / "ts", n_users=120, seed=3)
    cfg = _cfg(root / "var")
    trained = launch(cfg, ts, model_type=request.param, register=False, allow_unvalidated=True)
    chosen = select(cfg, [trained.run_id])
    assert gate(cfg, chosen.version, ts).promoted
    return cfg, ts, chosen


def test_run_scores_every_feature_row_once(spark, champion):
    cfg, ts, result = champion
    _check_scoring_run(spark, cfg, ts, result.model_version, result.run_id, result.model_uri)


def test_a_tabular_champion_scores_through_the_same_job(spark, tabular_champion):
    """Whatever family the selection and the gate promote, the nightly job scores with it, reasons and
    top categories included."""
    cfg, ts, chosen = tabular_champion
    uri = f"models:/{cfg.mlflow.model_name}/{chosen.version}"
    _check_scoring_run(spark, cfg, ts, chosen.version, chosen.run_id, uri)


def _check_scoring_run(spark, cfg, ts, version: str, run_id: str, model_uri: str) -> None:
    features = _write_features(cfg, ts, DS)
    report = run(cfg, DS, "scheduled__2026-01-20", spark=spark)
    assert report.rows == len(features)
    assert (report.model_version, report.model_run_id) == (version, run_id)
    # One load per Python worker, however many batches each scored.
    assert report.model_loads == report.workers >= 1
    assert report.batches >= len(features) // cfg.scoring.batch_size > report.model_loads

    scores = _read_scores(cfg, DS)
    assert list(scores.columns) == [c for c in SCORE_COLUMNS if c != "ds"] + [TOP_CATEGORIES_COLUMN, REASONS_COLUMN]
    assert scores["user_id"].is_unique
    assert set(scores["user_id"]) == set(features["user_id"])
    for c in PROBABILITY_COLUMNS:
        assert scores[c].between(0.0, 1.0).all(), c
    assert set(scores["model_version"]) == {version}
    assert set(scores["model_run_id"]) == {run_id}
    assert set(scores["model_name"]) == {cfg.mlflow.model_name}
    assert set(scores["pipeline_run_id"]) == {"scheduled__2026-01-20"}
    scored_at = pd.to_datetime(scores["scored_at"], utc=True).unique()
    assert list(scored_at) == [pd.Timestamp("2026-01-20", tz="UTC")]

    # Same numbers as the pyfunc on the driver, matched by user.
    with mlflow_store(cfg):
        expected = mlflow.pyfunc.load_model(model_uri).predict(features)
    expected.index = features["user_id"]
    got = scores.set_index("user_id").loc[features["user_id"], list(PROBABILITY_COLUMNS)]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-5, atol=1e-6)

    reasons = scores[REASONS_COLUMN]
    assert all(len(r) <= 2 and set(r) <= set(FEATURE_COLUMNS) for r in reasons)
    assert any(len(r) for r in reasons)

    # top_categories: each user's k most likely candidates, best first, as "<category>:<probability>".
    cand = pd.read_parquet(features_partition(cfg, "user_category", DS))
    per_user = cand.groupby("user_id")["category_id"].apply(set).to_dict()
    k = cfg.scoring.top_k_categories
    for uid, top in zip(scores["user_id"], scores[TOP_CATEGORIES_COLUMN], strict=True):
        if uid not in per_user:
            assert top is None
            continue
        cats = [t.rsplit(":", 1)[0] for t in top]
        probs = [float(t.rsplit(":", 1)[1]) for t in top]
        assert len(top) == min(k, len(per_user[uid])) and set(cats) <= per_user[uid]
        assert probs == sorted(probs, reverse=True) and all(0.0 <= p <= 1.0 for p in probs)
    # A category unseen in training is still scored (OOV index).
    uid = cand.loc[cand["category_id"] == UNSEEN, "user_id"].iloc[0]
    top = list(scores.set_index("user_id").loc[uid, TOP_CATEGORIES_COLUMN])
    assert len(per_user[uid]) <= k and any(t.startswith(UNSEEN + ":") for t in top)


def test_the_model_stage_keeps_the_shuffle_partitions_of_the_candidate_join(spark, champion):
    """Adaptive execution would coalesce the join's small shuffle partitions into one task; the scoring stage
    runs one task per shuffle partition (one Parquet file each) and leaves the session's settings as found."""
    cfg, ts, _ = champion
    features = _write_features(cfg, ts, DS)
    partitions, coalesce, broadcast = (
        spark.conf.get(k)
        for k in (
            "spark.sql.shuffle.partitions",
            "spark.sql.adaptive.coalescePartitions.enabled",
            "spark.sql.autoBroadcastJoinThreshold",
        )
    )
    assert coalesce == "true"
    # The candidates are joined by a shuffle, as at a nightly's size, not broadcast as their few rows would be.
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    spark.conf.set("spark.sql.shuffle.partitions", "4")
    try:
        report = run(cfg, DS, "scheduled__2026-01-20", spark=spark)
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", broadcast)
        spark.conf.set("spark.sql.shuffle.partitions", partitions)
    assert report.rows == len(features)
    assert len(list(scores_partition(cfg, DS).glob("*.parquet"))) == 4
    assert spark.conf.get("spark.sql.adaptive.coalescePartitions.enabled") == coalesce


def test_candidates_packed_by_the_features_job_score_the_same_without_a_join(spark, champion):
    """Features written by spark_jobs.features carry the candidate arrays: the job reads no user_category
    partition and gives the same scores as joining them itself."""
    from spark_jobs.features import attach_candidates
    from tasks.schema import CANDIDATE_ARRAY_CATEGORY

    cfg, ts, _ = champion
    _write_features(cfg, ts, DS, n=30)
    run(cfg, DS, "joined", spark=spark)
    joined = _read_scores(cfg, DS).set_index("user_id").sort_index()

    users, uc = (features_partition(cfg, layer, DS) for layer in ("user", "user_category"))
    candidates = spark.read.parquet(str(uc))
    pairs = [c for c in candidates.columns if c.startswith("f_uc_")]
    packed = attach_candidates(spark.read.parquet(str(users)), candidates, pairs).toPandas()
    assert packed[CANDIDATE_ARRAY_CATEGORY].notna().any()
    for f in [*users.glob("*.parquet"), *uc.glob("*.parquet")]:
        f.unlink()
    packed.to_parquet(users / "part-00000.parquet", index=False)
    assert run(cfg, DS, "packed", spark=spark).rows == 30
    got = _read_scores(cfg, DS).set_index("user_id").sort_index()
    np.testing.assert_allclose(got[list(PROBABILITY_COLUMNS)], joined[list(PROBABILITY_COLUMNS)], rtol=1e-6)
    tops = [[None if t is None else list(t) for t in df[TOP_CATEGORIES_COLUMN]] for df in (got, joined)]
    assert tops[0] == tops[1] and any(t is not None for t in tops[0])


def test_rerun_replaces_only_its_partition_and_loads_into_warehouse(spark, champion, tmp_path):
    cfg, ts, result = champion
    _write_features(cfg, ts, OTHER_DS, n=40)
    run(cfg, OTHER_DS, "first", spark=spark)
    _write_features(cfg, ts, DS)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["--config", str(cfg_file), "--ds", DS.isoformat(), "--run-id", "manual__rerun"]) == 0
    assert main(["--config", str(cfg_file), "--ds", DS.isoformat(), "--run-id", "manual__rerun2"]) == 0
    scores = _read_scores(cfg, DS)
    assert scores["user_id"].is_unique
    assert set(scores["pipeline_run_id"]) == {"manual__rerun2"}
    other = _read_scores(cfg, OTHER_DS)
    assert len(other) == 40 and set(other["pipeline_run_id"]) == {"first"}

    report = load_scores(cfg, DS)
    assert report.rows == len(scores)
    wh = Warehouse.from_config(cfg)
    top = wh.top_users(DS, 3)
    best = scores.sort_values(["p_purchase", "user_id"], ascending=[False, True]).head(3)
    assert top == list(zip(best["user_id"], best["p_purchase"], strict=True))


def test_pyfunc_reasons_match_the_standalone_gradient(champion):
    """Reasons from the predict pass (shared encoder output) equal those of the late fusion's gradient alone."""
    from tasks.models.base import reasons_from_gradient

    cfg, ts, result = champion
    rows = pd.read_parquet(ts / "test").head(40)
    with mlflow_store(cfg):
        model = mlflow.pyfunc.load_model(result.model_uri)
    out = model.predict(rows, params={"reasons_top_k": 3})
    assert list(out.columns) == [*PROBABILITY_COLUMNS, REASONS_COLUMN]
    inner = model.unwrap_python_model().predictor.inner  # behind the packaged calibration
    batch = inner.encoder.encode(rows)
    standalone = reasons_from_gradient(
        inner.model.tabular_gradient(batch), batch["tabular"], list(inner.encoder.feature_columns), 3
    )
    assert [list(r) for r in out[REASONS_COLUMN]] == standalone
    assert any(len(r) for r in out[REASONS_COLUMN])
    np.testing.assert_allclose(out[list(PROBABILITY_COLUMNS)], model.predict(rows), rtol=1e-6)


def test_reasons_off_gives_exactly_the_score_columns(spark, champion):
    cfg, ts, _ = champion
    features = _write_features(cfg, ts, DS, n=20)
    df = spark.read.parquet(str(features_partition(cfg, "user", DS)))
    out = score_users(
        df,
        resolve_champion(cfg),
        ds=DS,
        scored_at=dt.datetime(2026, 1, 20, tzinfo=dt.UTC),
        pipeline_run_id="adhoc",
        batch_size=7,
        torch_threads=1,
    )
    assert out.columns == list(SCORE_COLUMNS)
    rows = out.collect()
    assert sorted(r.user_id for r in rows) == sorted(features["user_id"])
    assert {r.ds for r in rows} == {DS}


def test_missing_features_partition(spark, champion):
    cfg, ts, _ = champion
    with pytest.raises(ScoringError, match="no features for ds=2030-01-01"):
        run(cfg, dt.date(2030, 1, 1), "r")
    day = dt.date(2030, 1, 2)
    _write_features(cfg, ts, day, n=5)
    for f in features_partition(cfg, "user_category", day).glob("*.parquet"):
        f.unlink()
    with pytest.raises(ScoringError, match="no candidate categories for ds=2030-01-02"):
        run(cfg, day, "r", spark=spark)


def test_features_missing_model_columns(spark, champion):
    cfg, ts, _ = champion
    _write_features(cfg, ts, DS, n=10)
    folder = features_partition(cfg, "user", DS)
    for f in folder.glob("*.parquet"):
        pq.write_table(pq.read_table(f).drop_columns(["f_avg_price"]), f)
    with pytest.raises(ScoringError, match=r"needs columns \['f_avg_price'\]"):
        run(cfg, DS, "r", spark=spark)


def test_features_with_wrong_types_fail_on_the_driver(spark, champion):
    """Workers call the model without mlflow's per-row checks, so the driver checks the types once."""
    import pyarrow as pa

    cfg, ts, _ = champion
    _write_features(cfg, ts, DS, n=10)
    folder = features_partition(cfg, "user", DS)
    for f in folder.glob("*.parquet"):
        t = pq.read_table(f)
        t = t.set_column(t.schema.get_field_index("f_avg_price"), "f_avg_price", t["f_avg_price"].cast(pa.string()))
        hours = t["seq_hour"].cast(pa.list_(pa.string()))
        t = t.set_column(t.schema.get_field_index("seq_hour"), "seq_hour", hours)
        pq.write_table(t, f)
    with pytest.raises(
        ScoringError,
        match=r"f_avg_price is string, model expects double; seq_hour is array<string>, model expects array<long>$",
    ):
        run(cfg, DS, "r", spark=spark)


def test_arrow_backed_rows_predict_like_plain_lists(champion):
    """The worker hands the model Arrow-backed list columns; the result equals mlflow's checked predict on
    plain lists, including candidates, top categories, reasons and null (empty) sequences."""
    import pyarrow as pa

    from spark_jobs.score import arrow_to_pandas, model_predictor

    cfg, ts, result = champion
    rows = pd.read_parquet(ts / "test").head(30).reset_index(drop=True)
    for c in SEQUENCE_COLUMNS:  # a user without events: null arrays
        rows.at[3, c] = None
    cand = pd.read_parquet(ts / "user_category" / "test")
    pair = [c for c in cand.columns if c.startswith("f_uc_")]
    grouped = cand.sort_values("category_id").groupby("user_id")
    as_lists = {"cand_category_id": "category_id", **{"cand_" + c: c for c in pair}}
    for name, c in as_lists.items():
        rows[name] = [v if isinstance(v, list) else None for v in rows["user_id"].map(grouped[c].apply(list))]
    with mlflow_store(cfg):
        model = mlflow.pyfunc.load_model(result.model_uri)
    params = {"reasons_top_k": 2, "top_k_categories": 3}
    checked = model.predict(rows, params=params)
    predict, arrow_lists = model_predictor(model)
    assert arrow_lists
    table = pa.Table.from_pandas(rows, preserve_index=False)
    # Two record batches: Arrow-backed columns are then chunked, as after Spark's toArrow.
    arrow_rows = arrow_to_pandas(
        pa.Table.from_batches([*table.slice(0, 11).to_batches(), *table.slice(11).to_batches()])
    )
    assert isinstance(arrow_rows["seq_hour"].dtype, pd.ArrowDtype)
    direct = predict(arrow_rows, params)
    np.testing.assert_allclose(direct[list(PROBABILITY_COLUMNS)], checked[list(PROBABILITY_COLUMNS)], rtol=1e-6)
    for col in (TOP_CATEGORIES_COLUMN, REASONS_COLUMN):
        assert [None if v is None else list(v) for v in direct[col]] == [
            None if v is None else list(v) for v in checked[col]
        ]
    assert direct[TOP_CATEGORIES_COLUMN].notna().sum() > 0


def test_a_challenger_scores_in_the_shadow_that_readers_never_see(spark, champion):
    cfg, ts, result = champion
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    _write_features(cfg, ts, OTHER_DS)
    assert run(cfg, OTHER_DS, "night", spark=spark) is not None
    load_scores(cfg, OTHER_DS)
    wh = Warehouse.from_config(cfg)
    readers = (
        f"SELECT count(*) FROM {cfg.warehouse.table} WHERE ds = '{OTHER_DS}'",
        f"SELECT count(*) FROM {cfg.warehouse.latest_view} WHERE ds = '{OTHER_DS}'",
        f"SELECT sum(n_users) FROM {cfg.warehouse.summary_view} WHERE ds = '{OTHER_DS}'",
    )
    before = [wh._query(sql, []) for sql in readers]
    # The same version holds both aliases here, so its shadow scores must equal the champion's row for row.
    client.set_registered_model_alias(cfg.mlflow.model_name, "challenger", result.model_version)
    try:
        shadow = run(cfg, OTHER_DS, "night", spark=spark, role="challenger")
        assert shadow is not None and shadow.path == scores_partition(cfg, OTHER_DS, "challenger")
        mine = _read_scores(cfg, OTHER_DS).sort_values("user_id").reset_index(drop=True)
        theirs = pq.read_table(shadow.path).to_pandas().sort_values("user_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine[list(PROBABILITY_COLUMNS)], theirs[list(PROBABILITY_COLUMNS)])
        report = load_scores(cfg, OTHER_DS, "challenger")
        assert (report.table, report.rows) == (cfg.warehouse.shadow_table, len(mine))
        assert wh.row_count(OTHER_DS, "challenger") == len(mine)
        assert [wh._query(sql, []) for sql in readers] == before
    finally:
        client.delete_registered_model_alias(cfg.mlflow.model_name, "challenger")
    # Without a challenger the night's shadow partition and shadow rows are removed, nothing else.
    assert run(cfg, OTHER_DS, "night-2", spark=spark, role="challenger") is None
    assert not scores_partition(cfg, OTHER_DS, "challenger").exists()
    assert load_scores(cfg, OTHER_DS, "challenger").rows == 0
    assert wh.row_count(OTHER_DS, "challenger") == 0
    assert [wh._query(sql, []) for sql in readers] == before
