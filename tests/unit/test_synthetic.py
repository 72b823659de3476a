"""Synthetic generator: layout, reproducibility, atomic replacement and calibration to the Taobao sample."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tasks.config import GeneratorConfig
from tasks.schema import EVENT_COLUMNS, EVENT_TYPES
from tasks.sources import synthetic, taxonomy
from tasks.sources.synthetic import LatentState, generate, latent_state, missions_at_cutoff


def _gen(**kw) -> GeneratorConfig:
    base = dict(seed=7, n_users=1200, n_days=9, start_date="2026-01-01", n_items=5000, n_categories=60, chunk_users=500)
    return GeneratorConfig(**{**base, **kw})


def _read(out) -> pd.DataFrame:
    files = sorted(out.glob("dt=*/events.csv"))
    return pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False).assign(dt=f.parent.name[3:]) for f in files])


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "synthetic"
    report = generate(_gen(), out)
    return out, report


def test_layout_header_and_day_partitions(log_dir):
    out, report = log_dir
    assert [p.name for p in sorted(out.iterdir())] == [f"dt=2026-01-{d:02d}" for d in range(1, 10)]
    for f in out.glob("dt=*/events.csv"):
        assert f.read_text().splitlines()[0] == ",".join(EVENT_COLUMNS)
    df = _read(out)
    assert len(df) == report.n_events == sum(report.events_per_day.values())
    assert df["event_time"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    assert (df["event_time"].str[:10] == df["dt"]).all()
    assert set(df["event_type"]) == set(EVENT_TYPES)
    assert (df["price"].astype(float) >= 0).all()
    assert (df[["user_id", "item_id", "category_id", "session_id"]] != "").all().all()


def test_calibrated_to_taobao(log_dir):
    out, _ = log_dir
    df = _read(out)
    frac = df["event_type"].value_counts(normalize=True)
    assert frac["view"] == pytest.approx(0.90, abs=0.025)
    assert frac["cart"] == pytest.approx(0.05, abs=0.015)
    assert frac["fav"] == pytest.approx(0.03, abs=0.01)
    assert frac["purchase"] == pytest.approx(0.02, abs=0.007)
    per_user = df.groupby("user_id").size()
    assert 60 <= per_user.median() <= 100
    buyers = df[df["event_type"] == "purchase"].groupby("dt")["user_id"].nunique() / per_user.size
    assert len(buyers) == 9 and buyers.between(0.10, 0.20).all(), buyers
    assert (df["query"] != "").mean() > 0.01


def test_purchases_follow_interest_in_same_item_or_category(log_dir):
    out, _ = log_dir
    df = _read(out).sort_values(["user_id", "event_time"], kind="stable")
    seen_item, seen_cat, total, ok = set(), set(), 0, 0
    for row in df.itertuples(index=False):
        if row.event_type == "purchase":
            total += 1
            ok += (row.user_id, row.item_id) in seen_item or (row.user_id, row.category_id) in seen_cat
        seen_item.add((row.user_id, row.item_id))
        seen_cat.add((row.user_id, row.category_id))
    assert total > 0 and ok / total > 0.95


def test_sessions_split_on_30_minute_gaps(log_dir):
    out, _ = log_dir
    df = _read(out)
    df["t"] = pd.to_datetime(df["event_time"])
    df = df.sort_values(["user_id", "t"], kind="stable")
    gap = df.groupby("user_id")["t"].diff().dt.total_seconds()
    same = df["session_id"].eq(df.groupby("user_id")["session_id"].shift())
    assert (gap[same] <= 1800).all()
    assert (gap[~same & gap.notna()] > 1800).all()


def test_same_seed_same_bytes_and_rerun_replaces(tmp_path):
    gen = _gen(n_users=150, n_days=3, chunk_users=40)
    a, b = tmp_path / "a", tmp_path / "b"
    generate(gen, a)
    generate(gen, b)
    for f in sorted(a.glob("*/events.csv")):
        assert f.read_bytes() == (b / f.relative_to(a)).read_bytes()
    generate(_gen(n_users=150, n_days=2, chunk_users=40, seed=8), a)
    assert sorted(p.name for p in a.iterdir()) == ["dt=2026-01-01", "dt=2026-01-02"]
    assert (a / "dt=2026-01-01/events.csv").read_bytes() != (b / "dt=2026-01-01/events.csv").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_day_boundaries_follow_time_zone(tmp_path):
    generate(_gen(n_users=100, n_days=2), tmp_path / "sh", tz="Asia/Shanghai")
    df = _read(tmp_path / "sh")
    local = pd.to_datetime(df["event_time"]).dt.tz_convert("Asia/Shanghai").dt.date.astype(str)
    assert (local == df["dt"]).all()
    assert pd.to_datetime(df["event_time"]).min() >= pd.Timestamp(dt.datetime(2025, 12, 31, 16), tz="UTC")


def test_rejects_catalogue_smaller_than_categories(tmp_path):
    with pytest.raises(ValueError, match="n_items"):
        generate(_gen(n_items=10, n_categories=60), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_latent_state_explains_the_log(tmp_path):
    gen = _gen(n_users=400, n_days=4, chunk_users=150)
    generate(gen, tmp_path / "log")
    df = _read(tmp_path / "log")
    state = latent_state(gen)
    assert list(state.user_ids) == [str(u) for u in range(1, 401)]
    assert state.drift.shape == (400, 5) and len(state.bounds) == 6
    for day in range(1, 5):
        buyers = set(df.loc[(df["event_type"] == "purchase") & (df["dt"] == f"2026-01-0{day}"), "user_id"])
        pending, is_open = missions_at_cutoff(state, day)
        assert pending.any() and (pending <= is_open).all()
        # A purchase decided before the cutoff happens that day (a buy session cut by the end of the day aside).
        assert np.mean([u in buyers for u in state.user_ids[pending]]) > 0.97


def test_missions_at_cutoff_on_a_hand_made_state():
    bounds = np.array([0, 100, 200, 300])  # simulated days 0, 1, 2
    state = LatentState(
        user_ids=np.array(["a", "b", "c", "d", "e", "f"], dtype=object),
        p_active=np.ones(6),
        session_rate=np.ones(6),
        len_scale=np.ones(6),
        baseline=np.zeros(6),
        drift=np.zeros((6, 3)),
        bounds=bounds,
        mission_user=np.array([0, 1, 2, 3, 4]),
        # a: researched day 1, buys day 2; b: never buys; c: bought before the cutoff; d: researched day 0;
        # e: researched day 1, buys after day 2.
        mission_research_s=np.array([150, 120, 110, 50, 190]),
        mission_buy_s=np.array([250, -1, 180, 150, 310]),
    )
    pending, is_open = missions_at_cutoff(state, 2)
    assert pending.tolist() == [True, False, False, False, False, False]
    assert is_open.tolist() == [True, True, False, False, True, False]
    for day in (0, 3):
        with pytest.raises(ValueError, match="day"):
            missions_at_cutoff(state, day)


def test_fresh_purchase_probability_matches_a_simulation():
    rng = np.random.default_rng(0)
    n = 400_000
    p_active, rate, len_scale, logit = 0.7, 0.8, 1.3, -1.0
    active = rng.random(n) < p_active
    intent = 1 / (1 + np.exp(-(logit + synthetic.INTENT_NOISE * rng.normal(size=n))))
    mission_buy = (rng.random(n) < intent) & (rng.random(n) < synthetic.MISSION_CONVERT * synthetic.MISSION_SAME_DAY)
    sessions = 1 + rng.poisson(rate, size=n)
    p_long = 1 - 1 / (1 + synthetic.SESSION_LEN_MEAN * len_scale)
    impulse = rng.binomial(sessions, p_long * synthetic.IMPULSE_BUY) > 0
    simulated = (active & (mission_buy | impulse)).mean()
    (p,) = synthetic.fresh_purchase_probability(
        np.array([p_active]), np.array([rate]), np.array([len_scale]), np.array([logit])
    )
    assert p == pytest.approx(simulated, abs=0.003)
    assert synthetic.fresh_purchase_probability(np.zeros(1), np.ones(1), np.ones(1), np.zeros(1))[0] == 0.0
    low, high = synthetic.fresh_purchase_probability(np.ones(2), np.ones(2), np.ones(2), np.array([-3.0, 1.0]))
    assert low < high


def _next_day_auc(df: pd.DataFrame, days: list[str]) -> float:
    """Mean over ``days`` of the ROC-AUC with which the day before's carts, favs and views rank who buys on the
    day: the research trace every model reads."""
    df = df.assign(day=pd.to_datetime(df["dt"]))
    counts = df.groupby(["user_id", "day", "event_type"]).size().unstack(fill_value=0)
    aucs = []
    for name in days:
        day = pd.Timestamp(name)
        before = counts.xs(day - pd.Timedelta(days=1), level="day")
        score = 3 * before.get("cart", 0) + before.get("fav", 0) + 0.2 * before.get("view", 0)
        bought = counts.xs(day, level="day").reindex(before.index, fill_value=0).get("purchase", 0) > 0
        aucs.append(roc_auc_score(bought.astype(int), score))
    return float(np.mean(aucs))


def test_concept_drift_changes_what_leads_to_a_purchase_from_its_day_on_only(tmp_path, log_dir):
    out, _ = log_dir
    drifted_out = tmp_path / "drifted"
    generate(_gen(concept_drift={"start_date": "2026-01-06"}), drifted_out)
    early = [f"2026-01-{d:02d}" for d in range(2, 6)]
    late = [f"2026-01-{d:02d}" for d in range(6, 10)]
    plain, drifted = _read(out), _read(drifted_out)
    # Before the drift day the trace predicts as usual (a new draw of the same behaviour)...
    assert _next_day_auc(drifted, early) == pytest.approx(_next_day_auc(plain, early), abs=0.015)
    # ...from it on fewer missions convert and impulse buys, which nothing announces, multiply.
    before, after = _next_day_auc(plain, late), _next_day_auc(drifted, late)
    assert after < before - 0.06, (before, after)


def test_concept_drift_factors_must_keep_probabilities_valid(tmp_path):
    from tasks.errors import ConfigError

    with pytest.raises(ConfigError, match="mission_convert_factor must be <= 1.25"):
        generate(
            _gen(n_users=10, concept_drift={"start_date": "2026-01-03", "mission_convert_factor": 2.0}), tmp_path / "x"
        )
    assert not (tmp_path / "x").exists()


# Words of a researching shopper's queries (tasks.sources.taxonomy.PHRASINGS[RESEARCH]).
RESEARCH_WORDS = r"\b(?:review|reviews|vs|price|best|comparison|which|specs|top 10)\b"


def test_text_names_each_product_in_real_words(log_dir):
    out, _ = log_dir
    df = _read(out)
    codes = df[df["category_code"] != ""].groupby("category_id")["category_code"].unique()
    assert (codes.str.len() == 1).all()  # one code per category
    tops = {leaf.code.split(".")[0] for leaf in taxonomy.LEAVES}
    for category_id, (code,) in codes.items():
        k = int(category_id) - 1
        assert code == taxonomy.category_code(k) and code.split(".")[0] in tops
        rows = df[df["category_id"] == category_id]
        leaf = taxonomy.category_leaf(k)[0]
        assert set(rows.loc[rows["brand"] != "", "brand"]) <= set(leaf.brands), code
        # Every query names the category's product kind or one of its brands.
        words = {w for noun in taxonomy.nouns(k) for w in noun.split()} | set(leaf.brands)
        for query in rows.loc[rows["query"] != "", "query"]:
            assert any(w in query for w in words), (code, query)


def test_query_wording_follows_the_shopping_mission(log_dir):
    """Researching users compare (brands, specs, "review", "vs", "price"); browsing users do not. So a day's
    research-worded queries announce a mission, and a purchase the next day far more often than other queries."""
    out, _ = log_dir
    df = _read(out)
    q = df[df["query"] != ""]
    day = q.assign(research=q["query"].str.contains(RESEARCH_WORDS)).groupby(["user_id", "dt"])["research"].max()
    bought = df[df["event_type"] == "purchase"]
    before = pd.to_datetime(bought["dt"]) - pd.Timedelta(days=1)
    buys_next = set(zip(bought["user_id"], before.dt.strftime("%Y-%m-%d"), strict=True))
    day = day.reset_index()
    day["buys_next"] = [k in buys_next for k in zip(day["user_id"], day["dt"], strict=True)]
    rate = day.groupby("research")["buys_next"].mean()
    assert day["research"].mean() > 0.05
    assert rate[True] > 2 * rate[False], rate

    queries = synthetic._catalog(_gen()).category_queries  # [categories, kinds, 16]
    research = pd.Series(queries[:, synthetic.RESEARCH].ravel())
    browse = pd.Series(queries[:, synthetic.BROWSE].ravel())
    assert research.str.contains(RESEARCH_WORDS).mean() > 0.9
    assert not browse.str.contains(r"\b(?:review|vs|specs|comparison)\b").any()


def test_the_text_changes_no_behaviour(tmp_path, monkeypatch):
    gen = _gen(n_users=200, n_days=4, chunk_users=100)
    first = tmp_path / "first"
    generate(gen, first)
    # Other phrasings, and one brand per product kind instead of several.
    reworded = tuple(tuple(f"{t} please" for t in kind) for kind in taxonomy.PHRASINGS)
    monkeypatch.setattr(taxonomy, "PHRASINGS", reworded)
    monkeypatch.setattr(taxonomy, "LEAVES", tuple(replace(leaf, brands=leaf.brands[:1]) for leaf in taxonomy.LEAVES))
    second = tmp_path / "second"
    generate(gen, second)
    a, b = _read(first), _read(second)
    behaviour = [c for c in a.columns if c not in ("query", "brand")]
    pd.testing.assert_frame_equal(a[behaviour], b[behaviour])
    assert ((a["query"] != "") == (b["query"] != "")).all()
    assert (b.loc[b["query"] != "", "query"].str.endswith(" please")).all()


def test_new_categories_appear_part_way_as_variants_of_a_kind_that_exists(log_dir):
    out, _ = log_dir
    events = _read(out)
    gen = _gen()
    launch, stand_in = synthetic._launches(gen)
    late = np.flatnonzero(launch > 0)
    assert len(late) >= 3
    first_day = events.groupby("category_id")["dt"].min()
    days = [(gen.start + dt.timedelta(days=i)).isoformat() for i in range(gen.n_days)]
    for k in late:
        # Simulated day j is generated day j - 1; launches land in the second half of the log.
        assert gen.n_days // 2 <= launch[k] - 1 < gen.n_days
        cid = str(k + 1)
        assert cid not in first_day or first_day[cid] >= days[launch[k] - 1]
        assert launch[stand_in[k]] == 0
        assert taxonomy.category_code(k).startswith(taxonomy.category_code(stand_in[k]) + ".")
    seen_late = [k for k in late if str(k + 1) in first_day]
    assert len(seen_late) >= len(late) // 2, "most launched categories are visited after their launch"


def test_launches_move_categories_only(tmp_path):
    never, some = tmp_path / "never", tmp_path / "some"
    every = _gen(n_users=300, n_days=6, chunk_users=150, new_categories={"share": 1.0})
    generate(_gen(n_users=300, n_days=6, chunk_users=150, new_categories={"share": 0.0}), never)
    generate(every, some)
    a, b = _read(never), _read(some)
    behaviour = ["event_time", "user_id", "event_type", "session_id", "dt"]
    pd.testing.assert_frame_equal(a[behaviour], b[behaviour])
    assert ((a["query"] != "") == (b["query"] != "")).all()
    launch, stand_in = synthetic._launches(every)
    moved = a["category_id"] != b["category_id"]
    assert moved.any()
    k = a.loc[moved, "category_id"].astype(int).to_numpy() - 1
    assert (launch[k] > 0).all()
    assert (b.loc[moved, "category_id"].astype(int).to_numpy() - 1 == stand_in[k]).all()
