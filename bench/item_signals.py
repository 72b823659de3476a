"""The item-level intent signals that next-day purchase prediction on Taobao-style logs is known to depend on,
computed from a backtest's events layer, and the ablation that says whether they add anything to the f_*
features (bench feature_ablation, issue 25).

Signals per (user, cutoff), over the lookback before the cutoff:
- ``open_items``: items the user carted or favourited and has not bought since (at or after that event);
- ``max_item_views``: the most views of any one item;
- ``last_day_item_share`` / ``last_day_category_share``: of the user's events in the 24 hours before the
  cutoff, the largest share on one item / one category (0 without such events).
Time since the last cart is already a feature (``f_recency_cart``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.config import PipelineConfig

SIGNALS = ("open_items", "max_item_views", "last_day_item_share", "last_day_category_share")


def signals_sql(events_glob: str, lookback_days: int, tz: str) -> str:
    """DuckDB SQL of SIGNALS per row of the relation ``keys`` (user_id, ds)."""
    return f"""
    WITH cut AS (
        SELECT DISTINCT ds, timezone('{tz}', CAST(ds AS TIMESTAMP)) AS cutoff FROM keys
    ), ev AS (
        SELECT k.user_id, k.ds, c.cutoff, e.item_id, e.category_id, e.event_type, e.event_time
        FROM keys k JOIN cut c USING (ds)
        JOIN (
            SELECT user_id, item_id, category_id, event_type, CAST(event_time AS TIMESTAMPTZ) AS event_time
            FROM read_parquet('{events_glob}', hive_partitioning = false)
        ) e
          ON e.user_id = k.user_id
         AND e.event_time < c.cutoff AND e.event_time >= c.cutoff - INTERVAL {lookback_days} DAY
    ), per_item AS (
        SELECT user_id, ds,
               max(event_time) FILTER (WHERE event_type IN ('cart', 'fav')) AS last_intent,
               max(event_time) FILTER (WHERE event_type = 'purchase') AS last_buy,
               count(*) FILTER (WHERE event_type = 'view') AS views
        FROM ev GROUP BY user_id, ds, item_id
    ), items AS (
        SELECT user_id, ds,
               count(*) FILTER (WHERE last_intent IS NOT NULL AND (last_buy IS NULL OR last_buy < last_intent))
                   AS open_items,
               max(views) AS max_item_views
        FROM per_item GROUP BY user_id, ds
    ), last_day AS (
        SELECT * FROM ev WHERE event_time >= cutoff - INTERVAL 1 DAY
    ), day_n AS (
        SELECT user_id, ds, count(*) AS n FROM last_day GROUP BY user_id, ds
    ), day_item AS (
        SELECT user_id, ds, max(c) AS top FROM (
            SELECT user_id, ds, count(*) AS c FROM last_day GROUP BY user_id, ds, item_id
        ) GROUP BY user_id, ds
    ), day_cat AS (
        SELECT user_id, ds, max(c) AS top FROM (
            SELECT user_id, ds, count(*) AS c FROM last_day GROUP BY user_id, ds, category_id
        ) GROUP BY user_id, ds
    )
    SELECT k.user_id, k.ds,
           coalesce(i.open_items, 0) AS open_items,
           coalesce(i.max_item_views, 0) AS max_item_views,
           coalesce(di.top / dn.n, 0) AS last_day_item_share,
           coalesce(dc.top / dn.n, 0) AS last_day_category_share
    FROM keys k
    LEFT JOIN items i USING (user_id, ds)
    LEFT JOIN day_n dn USING (user_id, ds)
    LEFT JOIN day_item di USING (user_id, ds)
    LEFT JOIN day_cat dc USING (user_id, ds)
    """


def item_signals(keys: pd.DataFrame, events_root: Path, lookback_days: int, tz: str) -> pd.DataFrame:
    """SIGNALS for each (user_id, ds) of ``keys``, in its row order."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    frame = keys[["user_id", "ds"]].astype({"user_id": str}).assign(ds=pd.to_datetime(keys["ds"]).dt.date)
    con.register("keys", frame)
    out = con.execute(signals_sql(str(events_root / "*" / "*.parquet"), lookback_days, tz)).df()
    con.close()
    out["ds"] = pd.to_datetime(out["ds"]).dt.date
    merged = frame.merge(out, on=["user_id", "ds"], how="left", validate="one_to_one")
    return merged[list(SIGNALS)].astype(np.float64)


def ablation(
    cfg: PipelineConfig, training_set_dir: Path, events_root: Path, tz: str, *, resamples: int, seed: int
) -> list[dict]:
    """Test ROC-AUC / PR-AUC of the project's ``lr`` and ``lightgbm`` families (their ``models.*`` settings,
    encoder and early stopping, fitted as ``tasks.training.tabular`` fits them) on the f_* features alone, plus
    each signal, and plus all of them; each addition's difference with f_* alone and its 95% paired bootstrap
    interval (users resampled)."""
    from dataclasses import replace

    from tasks.backtest_report import interval, user_resamples, weighted_auc_ap
    from tasks.training.data import read_manifest
    from tasks.training.tabular import new_tabular_model, read_split

    manifest = read_manifest(training_set_dir)
    feats = [str(c) for c in manifest["feature_columns"]]
    pair = [str(c) for c in manifest["user_category"]["feature_columns"]]
    splits = {}
    for name in ("train", "val", "test"):
        split = read_split(cfg, training_set_dir, name, manifest)
        sig = item_signals(split.users, events_root, int(manifest["lookback_days"]), tz)
        splits[name] = replace(split, users=split.users.assign(**{f"sig_{c}": sig[c].to_numpy() for c in SIGNALS}))
    test = splits["test"]
    y = test.labels[:, 0]
    users = pd.factorize(test.users["user_id"].astype(str))[0]
    weights = user_resamples(users, resamples, seed)[:, users]
    variants = {"f_* only": [], **{f"+ {s}": [s] for s in SIGNALS}, "+ all four": list(SIGNALS)}
    rows = []
    for learner in ("lr", "lightgbm"):
        base = None
        for variant, extra in variants.items():
            model, encoder = new_tabular_model(
                cfg, learner, manifest, splits["train"], feats + [f"sig_{c}" for c in extra], pair
            )
            model.fit(encoder, splits["train"], splits["val"])
            p = model.predict_chunk(test.users, test.cand_rows, test.cand, 0).intent[:, 0]
            auc, ap = weighted_auc_ap(y, p, np.ones((1, len(p))))
            boot_auc, boot_ap = weighted_auc_ap(y, p, weights)
            row = {"learner": learner, "features": variant, "test ROC-AUC": float(auc[0]), "test PR-AUC": float(ap[0])}
            if base is None:
                base = (float(auc[0]), float(ap[0]), boot_auc, boot_ap)
            else:
                row["ROC-AUC diff"] = float(auc[0]) - base[0]
                row["ROC-AUC diff 95%"] = interval(boot_auc - base[2])
                row["PR-AUC diff"] = float(ap[0]) - base[1]
                row["PR-AUC diff 95%"] = interval(boot_ap - base[3])
            rows.append(row)
    return rows
