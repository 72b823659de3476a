"""Synthetic e-commerce behaviour log, calibrated to the Taobao UserBehavior sample.

Writes one canonical CSV per day (``<out>/dt=YYYY-MM-DD/events.csv``, header = ``tasks.schema.EVENT_COLUMNS``)
so the whole pipeline can run at any scale without a real export. What it models and why is documented
in docs/synthetic-data.md. Users are generated in chunks of ``generator.chunk_users`` with vectorised
numpy, each chunk appended to the day files, so memory is bounded by one chunk, not by the log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from tasks.config import GeneratorConfig, add_common_args, config_from_args
from tasks.errors import ConfigError
from tasks.layers import DAY_KEY, incoming_dir, partition_dir
from tasks.schema import EVENT_COLUMNS
from tasks.sources import taxonomy

log = logging.getLogger(__name__)

VIEW, CART, FAV, PURCHASE = 0, 1, 2, 3
TYPE_NAMES = np.array(["view", "cart", "fav", "purchase"], dtype=object)
BROWSE, RESEARCH, BUY = 0, 1, 2
# Item rule of one event: sampled from its category, the mission's target item, or the previous event's item.
SAMPLED, TARGET, COPY_PREV = 0, 1, 2

SESSION_GAP_S = 30 * 60
# Relative activity by local hour of day (evening peak, night trough), as in e-commerce traffic.
HOURLY_WEIGHTS = np.array([2, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 6, 5, 5, 5, 5, 6, 7, 8, 9, 9, 7, 4], dtype=float)

# Behaviour parameters, tuned so a 9-day log of the default population matches the Taobao sample
# (about 90% views, 5% carts, 3% favs, 2% purchases; median ~80 events per active user; ~15% of the
# population buying on a given day). tests/unit/test_synthetic.py checks these targets.
P_ACTIVE_A, P_ACTIVE_B = 6.0, 2.2  # beta prior of a user's daily activity probability (mean ~0.73)
SESSIONS_MEDIAN, SESSIONS_SIGMA = 0.55, 0.6  # extra browse sessions per active day ~ Poisson(lognormal)
SESSION_LEN_MEAN = 5.0  # mean browse-session length is 1 + SESSION_LEN_MEAN (times the user's length scale)
BROWSE_CART, BROWSE_FAV = 0.035, 0.03  # per-event chance (after the first) of a cart / fav of the item just seen
IMPULSE_BUY = 0.025  # chance that a browse session ends with buying the item just seen
INTENT_MEAN, INTENT_SD = -1.5, 0.8  # user baseline intent (logit of the daily mission probability)
INTENT_RHO, INTENT_NOISE = 0.75, 0.7  # AR(1) drift of intent from day to day
MISSION_CONVERT = 0.8  # chance that a shopping mission ends in a purchase
MISSION_SAME_DAY = 0.4  # a converted mission buys on its research day, else on the next day
MISSION_TARGET_P = 0.35  # in mission sessions, each sampled event is the target item with this chance
SECOND_PURCHASE = 0.35  # a buy session also buys a second item of the mission category
QUERY_P = 0.35  # the first view of a session carries a search query with this chance


@dataclass(frozen=True)
class GenerateReport:
    out_dir: Path
    days: tuple[dt.date, ...]
    n_users: int
    n_active_users: int
    n_events: int
    events_per_day: dict[str, int]


@dataclass(frozen=True)
class LatentState:
    """The hidden variables behind a log (drawn by the generator, never emitted), for analyses such as
    the best ranking any model of the observable history could reach. Simulated day j starts at
    bounds[j]; day 0 is the unemitted warm-up day, so generated day i is simulated day i + 1."""

    user_ids: np.ndarray  # [U] public user id (str)
    p_active: np.ndarray  # [U] daily activity probability
    session_rate: np.ndarray  # [U] mean extra browse sessions per active day
    len_scale: np.ndarray  # [U] browse-session length scale
    baseline: np.ndarray  # [U] baseline intent (logit)
    drift: np.ndarray  # [U, D + 1] AR(1) intent drift per simulated day
    bounds: np.ndarray  # [D + 2] epoch seconds of each simulated day's local midnight, plus the end
    mission_user: np.ndarray  # [M] row in user_ids
    mission_research_s: np.ndarray  # [M] epoch seconds of the research session's start
    mission_buy_s: np.ndarray  # [M] epoch seconds of the buy session's start; -1 when the mission buys nothing


@dataclass(frozen=True)
class _Catalog:
    item_category: np.ndarray  # [n_items] category index of each item
    cat_offsets: np.ndarray  # [n_categories] start of each category's items in cat_items
    cat_counts: np.ndarray  # [n_categories] items per category (>= 1)
    cat_items: np.ndarray  # [n_items] item indices grouped by category, most popular first
    cat_popularity: np.ndarray  # [n_categories] probabilities
    item_ids: np.ndarray  # [n_items] public item id (str)
    item_price: np.ndarray  # [n_items] float, >= 0
    item_brand: np.ndarray  # [n_items] str or "" (no brand)
    category_ids: np.ndarray  # [n_categories] public category id (str)
    category_code: np.ndarray  # [n_categories] str or ""
    category_queries: np.ndarray  # [n_categories, 3, 16] queries per category, session kind and phrasing
    launch_day: np.ndarray  # [n_categories] first simulated day the category exists (0: from the start)
    stand_in: np.ndarray  # [n_categories] the category that takes its sessions and events before its launch

    def launched(self, categories: np.ndarray, day: np.ndarray) -> np.ndarray:
        """``categories`` [N] as they exist on simulated ``day`` [N]: one not launched yet becomes its stand-in."""
        return np.where(self.launch_day[categories] > day, self.stand_in[categories], categories)


def _pick(options: tuple[str, ...], u: float, avoid: int = -1) -> tuple[str, int]:
    """The option (and its index) at uniform draw ``u`` in [0, 1), among all but index ``avoid`` if others exist."""
    pool = [i for i in range(len(options)) if i != avoid] or [avoid]
    i = pool[min(int(u * len(pool)), len(pool) - 1)]
    return options[i], i


def _category_queries(rng: np.random.Generator, n_cat: int) -> np.ndarray:
    """[n_cat, kinds, 16] search queries: each phrasing of each session kind filled with the category's words, two
    distinct brands and two distinct specs of its product kind (tasks.sources.taxonomy)."""
    kinds, per_kind = len(taxonomy.PHRASINGS), len(taxonomy.PHRASINGS[0])
    draws = rng.random((n_cat, kinds, per_kind, 6))
    out = np.empty((n_cat, kinds, per_kind), dtype=object)
    for k in range(n_cat):
        leaf, names = taxonomy.category_leaf(k)[0], taxonomy.nouns(k)
        for s, templates in enumerate(taxonomy.PHRASINGS):
            for j, template in enumerate(templates):
                u = draws[k, s, j]
                noun, i = _pick(names, u[0])
                brand, b = _pick(leaf.brands, u[2])
                spec, c = _pick(leaf.specs, u[4])
                out[k, s, j] = taxonomy.phrase(
                    template,
                    noun=noun,
                    noun2=_pick(names, u[1], avoid=i)[0],
                    brand=brand,
                    brand2=_pick(leaf.brands, u[3], avoid=b)[0],
                    spec=spec,
                    spec2=_pick(leaf.specs, u[5], avoid=c)[0],
                )
    return out


def _catalog(gen: GeneratorConfig) -> _Catalog:
    rng = np.random.default_rng([gen.seed, 0])
    n_cat, n_items = gen.n_categories, gen.n_items
    if n_items < n_cat:
        raise ValueError(f"generator.n_items ({n_items}) must be >= generator.n_categories ({n_cat})")
    # Zipf-like category popularity; each category's share of the catalogue follows its popularity.
    pop = 1.0 / np.arange(1, n_cat + 1) ** 1.1
    pop = pop[rng.permutation(n_cat)]
    pop /= pop.sum()
    counts = 1 + rng.multinomial(n_items - n_cat, pop)
    item_category = np.repeat(np.arange(n_cat), counts)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cat_items = np.arange(n_items)
    item_ids = (rng.permutation(n_items) + 1).astype(str).astype(object)
    base_price = rng.lognormal(3.2, 1.0, size=n_cat)
    price = np.round(base_price[item_category] * rng.lognormal(0.0, 0.35, size=n_items), 2)
    # Text (tasks.sources.taxonomy): each item a brand of its product kind (25 % none), a category code per
    # category (20 % missing, as in REES46), and the queries. Drawn last, so the behaviour does not depend on it.
    leaves = [taxonomy.category_leaf(k)[0] for k in range(n_cat)]
    brand_u = rng.random(n_items)
    item_brand = np.array(
        [_pick(leaves[c].brands, u)[0] for c, u in zip(item_category, brand_u, strict=True)], dtype=object
    )
    item_brand[rng.random(n_items) < 0.25] = ""
    code = np.array([taxonomy.category_code(k) for k in range(n_cat)], dtype=object)
    code[rng.random(n_cat) < 0.2] = ""
    queries = _category_queries(rng, n_cat)
    launch_day, stand_in = _launches(gen)
    return _Catalog(
        item_category=item_category,
        cat_offsets=offsets,
        cat_counts=counts,
        cat_items=cat_items,
        cat_popularity=pop,
        item_ids=item_ids,
        item_price=price,
        item_brand=item_brand,
        category_ids=(np.arange(n_cat) + 1).astype(str).astype(object),
        category_code=code,
        category_queries=queries,
        launch_day=launch_day,
        stand_in=stand_in,
    )


def _launches(gen: GeneratorConfig) -> tuple[np.ndarray, np.ndarray]:
    """([n_categories] first simulated day of each category, [n_categories] its stand-in before then). Only variants
    of a product kind launch late; a variant's stand-in is the kind's first category (tasks.sources.taxonomy), which
    exists from the start. Drawn from a stream of their own, so the other draws do not depend on them."""
    rng = np.random.default_rng([gen.seed, 2])
    n_cat, kinds = gen.n_categories, len(taxonomy.LEAVES)
    stand_in = np.arange(n_cat) % kinds
    launch = np.zeros(n_cat, dtype=np.int64)
    variants = np.arange(kinds, n_cat)
    late = variants[rng.random(len(variants)) < gen.new_categories.share]
    # Generated day i is simulated day i + 1 (day 0 is the unemitted warm-up).
    first = int(gen.new_categories.from_fraction * gen.n_days)
    launch[late] = 1 + rng.integers(first, gen.n_days, size=len(late))
    return launch, stand_in


def _sample_items(rng: np.random.Generator, cat: _Catalog, categories: np.ndarray) -> np.ndarray:
    # u**2.5 skews picks towards the first (most popular) items of each category.
    pos = np.floor(rng.random(len(categories)) ** 2.5 * cat.cat_counts[categories]).astype(np.int64)
    return cat.cat_items[cat.cat_offsets[categories] + pos]


def _local_day_starts(days: list[dt.date], tz: str) -> np.ndarray:
    """Epoch seconds (UTC) of each day's local midnight, plus the end of the last day: [n_days + 1]."""
    zone = ZoneInfo(tz)
    bounds = [*days, days[-1] + dt.timedelta(days=1)]
    return np.array([int(dt.datetime.combine(d, dt.time(), tzinfo=zone).timestamp()) for d in bounds], dtype=np.int64)


def _hour_offsets(rng: np.random.Generator, n: int) -> np.ndarray:
    hours = rng.choice(24, size=n, p=HOURLY_WEIGHTS / HOURLY_WEIGHTS.sum())
    return hours * 3600 + rng.integers(0, 3600, size=n)


def _drifted_days(gen: GeneratorConfig, n_days: int) -> np.ndarray:
    """[D] True for each simulated day on or after ``generator.concept_drift.start_date`` (simulated day 0 is the
    warm-up day before ``start_date``)."""
    concept = gen.concept_drift
    if MISSION_CONVERT * concept.mission_convert_factor > 1 or IMPULSE_BUY * concept.impulse_factor > 1:
        raise ConfigError(
            f"generator.concept_drift: mission_convert_factor must be <= {1 / MISSION_CONVERT:g} and impulse_factor "
            f"<= {1 / IMPULSE_BUY:g} (they scale probabilities {MISSION_CONVERT} and {IMPULSE_BUY})"
        )
    first = concept.start
    simulated = np.arange(n_days)
    if first is None:
        return np.zeros(n_days, dtype=bool)
    return simulated >= (first - gen.start).days + 1


def _chunk_events(
    gen: GeneratorConfig,
    cat: _Catalog,
    chunk: int,
    first_user: int,
    n_users: int,
    bounds: np.ndarray,
    latent: list[LatentState] | None = None,
) -> pd.DataFrame:
    """All events of users [first_user, first_user + n_users), sorted by user then time; appends the
    chunk's hidden variables to ``latent`` when given (the draws, hence the events, are the same)."""
    rng = np.random.default_rng([gen.seed, 1, chunk])
    n_days = len(bounds) - 1
    day_len = np.diff(bounds)  # [D] seconds; 23 or 25 h on DST changes

    # Per-user traits [U].
    p_active = rng.beta(P_ACTIVE_A, P_ACTIVE_B, size=n_users)
    rate = rng.lognormal(np.log(SESSIONS_MEDIAN), SESSIONS_SIGMA, size=n_users)
    len_scale = rng.lognormal(0.0, 0.5, size=n_users)
    prefs = rng.choice(len(cat.cat_popularity), size=(n_users, 3), p=cat.cat_popularity)
    baseline = rng.normal(INTENT_MEAN, INTENT_SD, size=n_users)

    # Latent intent drifting as AR(1) around the user's baseline: z [U, D].
    noise = rng.normal(0.0, INTENT_NOISE, size=(n_users, n_days))
    drift = np.empty_like(noise)
    drift[:, 0] = noise[:, 0] / np.sqrt(1 - INTENT_RHO**2)
    for d in range(1, n_days):
        drift[:, d] = INTENT_RHO * drift[:, d - 1] + noise[:, d]
    intent = 1.0 / (1.0 + np.exp(-(baseline[:, None] + drift)))

    active = rng.random((n_users, n_days)) < p_active[:, None]  # [U, D]
    n_browse = np.where(active, 1 + rng.poisson(rate[:, None] * np.ones(n_days)), 0)  # [U, D]
    mission = active & (rng.random((n_users, n_days)) < intent)  # [U, D]

    # Browse sessions.
    bu, bd = np.nonzero(n_browse)
    reps = n_browse[bu, bd]
    b_user, b_day = np.repeat(bu, reps), np.repeat(bd, reps)
    nb = len(b_user)
    b_len = rng.geometric(1.0 / (1.0 + SESSION_LEN_MEAN * len_scale[b_user]))
    explore = rng.random(nb) < 0.15
    b_focus = np.where(
        explore,
        rng.choice(len(cat.cat_popularity), size=nb, p=cat.cat_popularity),
        prefs[b_user, rng.choice(3, size=nb, p=[0.5, 0.3, 0.2])],
    )
    b_focus = cat.launched(b_focus, b_day)
    b_start = bounds[b_day] + np.minimum(_hour_offsets(rng, nb), day_len[b_day] - 1)

    # Shopping missions: a focused research session on day d, then (if converted) a buy session the same
    # day or the next; the burst of views/carts in one category before a purchase is the sequence signal.
    mu, md = np.nonzero(mission)
    nm = len(mu)
    m_focus = np.where(
        rng.random(nm) < 0.8,
        prefs[mu, rng.integers(0, 3, size=nm)],
        rng.choice(len(cat.cat_popularity), size=nm, p=cat.cat_popularity),
    )
    m_focus = cat.launched(m_focus, md)
    m_target = _sample_items(rng, cat, m_focus)
    r_len = 2 + rng.geometric(1.0 / 6.0, size=nm)
    r_start = bounds[md] + np.minimum(_hour_offsets(rng, nm), day_len[md] - 1)
    r_gap = rng.integers(40 * 60, 5 * 3600, size=nm)
    drifted = _drifted_days(gen, n_days)  # [D] bool per simulated day
    concept = gen.concept_drift
    converted = rng.random(nm) < np.where(
        drifted[md], MISSION_CONVERT * concept.mission_convert_factor, MISSION_CONVERT
    )
    same_day = rng.random(nm) < MISSION_SAME_DAY
    next_day = np.minimum(md + 1, n_days - 1)
    k_start = np.where(
        same_day,
        r_start + r_len * 120 + r_gap,
        bounds[next_day] + np.minimum(_hour_offsets(rng, nm), day_len[next_day] - 1),
    )
    # A next-day purchase past the generated range is simply not observed.
    buy = converted & (same_day | (md + 1 < n_days))
    k_pre = rng.geometric(1.0 / 3.0, size=nm)
    k_cart = rng.random(nm) < 0.6
    k_second = rng.random(nm) < SECOND_PURCHASE
    k_len = k_pre + k_cart + 1 + 2 * k_second
    if latent is not None:
        latent.append(
            LatentState(
                user_ids=(first_user + np.arange(n_users) + 1).astype(str).astype(object),
                p_active=p_active,
                session_rate=rate,
                len_scale=len_scale,
                baseline=baseline,
                drift=drift,
                bounds=bounds,
                mission_user=mu,
                mission_research_s=r_start,
                mission_buy_s=np.where(buy, k_start, -1),
            )
        )

    # Session table: browse, research, buy [S].
    s_user = np.concatenate([b_user, mu, mu[buy]])
    s_kind = np.concatenate([np.full(nb, BROWSE), np.full(nm, RESEARCH), np.full(buy.sum(), BUY)])
    s_focus = np.concatenate([b_focus, m_focus, m_focus[buy]])
    s_target = np.concatenate([np.full(nb, -1), m_target, m_target[buy]])
    s_len = np.concatenate([b_len, r_len, k_len[buy]]).astype(np.int64)
    s_start = np.concatenate([b_start, r_start, k_start[buy]])
    s_day = np.concatenate([b_day, md, np.where(same_day, md, next_day)[buy]])
    s_pre = np.concatenate([np.zeros(nb + nm, dtype=np.int64), k_pre[buy]])
    s_cart = np.concatenate([np.zeros(nb + nm, dtype=bool), k_cart[buy]])
    impulse = np.where(drifted[b_day], IMPULSE_BUY * concept.impulse_factor, IMPULSE_BUY)
    s_impulse = np.concatenate([rng.random(nb) < impulse, np.zeros(nm + buy.sum(), dtype=bool)])

    # Events [E]: one row per (session, position).
    n_events = int(s_len.sum())
    sess = np.repeat(np.arange(len(s_len)), s_len)
    first = np.concatenate([[0], np.cumsum(s_len)[:-1]])
    pos = np.arange(n_events) - first[sess]
    last = pos == s_len[sess] - 1
    kind = s_kind[sess]

    etype = np.full(n_events, VIEW)
    rule = np.full(n_events, SAMPLED)
    r = rng.random(n_events)
    browse_ev = (kind == BROWSE) & (pos > 0)
    etype[browse_ev & (r < BROWSE_CART)] = CART
    etype[browse_ev & (r >= BROWSE_CART) & (r < BROWSE_CART + BROWSE_FAV)] = FAV
    etype[(kind == BROWSE) & last & (pos > 0) & s_impulse[sess]] = PURCHASE
    research_ev = (kind == RESEARCH) & (pos > 0)
    etype[research_ev & (r < 0.15)] = CART
    etype[research_ev & (r >= 0.15) & (r < 0.24)] = FAV
    # Buy session layout: k_pre views, [cart target], purchase target, [view + purchase of a second item].
    bpos = pos - s_pre[sess]
    buy_ev = kind == BUY
    has_cart = s_cart[sess]
    etype[buy_ev & has_cart & (bpos == 0)] = CART
    rule[buy_ev & has_cart & (bpos == 0)] = TARGET
    p_first = buy_ev & (bpos == has_cart.astype(np.int64))
    etype[p_first] = PURCHASE
    rule[p_first] = TARGET
    etype[buy_ev & (bpos == has_cart + 2)] = PURCHASE
    # A cart, fav or purchase is of the item just seen, unless the layout names the mission's target.
    rule[(etype != VIEW) & (rule != TARGET)] = COPY_PREV
    rule[(pos == 0) & (rule == COPY_PREV)] = SAMPLED

    # Categories and items.
    mission_ev = kind != BROWSE
    on_focus = rng.random(n_events) < np.where(mission_ev, 0.92, 0.75)
    stray = prefs[s_user[sess], rng.integers(0, 3, size=n_events)]
    # A category launched later is not there yet: the session's day decides (a launch opens at local midnight).
    ecat = np.where(on_focus, s_focus[sess], cat.launched(stray, s_day[sess]))
    item = _sample_items(rng, cat, ecat)
    to_target = (mission_ev & (rng.random(n_events) < MISSION_TARGET_P)) | (rule == TARGET)
    item = np.where(to_target & (s_target[sess] >= 0), s_target[sess], item)
    idx = np.arange(n_events)
    copy = rule == COPY_PREV
    for _ in range(3):  # resolves chains such as view -> cart -> purchase of the same item
        item[copy] = item[idx[copy] - 1]

    # Times: seconds between events within a session stay well under the 30-minute session gap.
    gaps = np.clip(rng.exponential(50.0, size=n_events), 1, 900).astype(np.int64)
    gaps[pos == 0] = 0
    csum = np.cumsum(gaps)
    t = s_start[sess] + csum - csum[first[sess]]

    # Day 0 of the simulation is a warm-up (so the first kept day sees next-day purchases too): not emitted.
    keep = (t >= bounds[1]) & (t < bounds[-1])
    user = s_user[sess][keep]
    t, item, etype, pos, ekind = t[keep], item[keep], etype[keep], pos[keep], kind[keep]
    order = np.lexsort((etype, t, user))
    user, t, item, etype, pos, ekind = user[order], t[order], item[order], etype[order], pos[order], ekind[order]

    # Sessions re-derived from the emitted times (30-minute inactivity), so the column is always consistent.
    new_user = np.concatenate([[True], user[1:] != user[:-1]])
    new_sess = new_user | np.concatenate([[True], np.diff(t) > SESSION_GAP_S])
    sess_no = np.cumsum(new_sess)
    sess_no = sess_no - np.maximum.accumulate(np.where(new_user, sess_no, 0)) + 1

    ecat = cat.item_category[item]
    user_ids = (first_user + user + 1).astype(str).astype(object)
    query = np.full(len(t), "", dtype=object)
    with_query = new_sess & (etype == VIEW) & (rng.random(len(t)) < QUERY_P)
    # Worded as the session's kind: browsing generically, researching by comparing, buying the exact product.
    query[with_query] = cat.category_queries[
        ecat[with_query], ekind[with_query], rng.integers(0, 16, size=with_query.sum())
    ]
    times = np.datetime_as_string(t.astype("datetime64[s]"), unit="s").astype(object) + "Z"
    frame = pd.DataFrame(
        {
            "event_time": times,
            "user_id": user_ids,
            "item_id": cat.item_ids[item],
            "category_id": cat.category_ids[ecat],
            "event_type": TYPE_NAMES[etype],
            "price": cat.item_price[item],
            "session_id": user_ids + "-" + sess_no.astype(str).astype(object),
            "query": query,
            "brand": cat.item_brand[item],
            "category_code": cat.category_code[ecat],
        },
        columns=list(EVENT_COLUMNS),
    )
    frame["_day"] = np.searchsorted(bounds, t, side="right") - 2
    return frame


def generate(gen: GeneratorConfig, out_dir: Path, tz: str = "UTC") -> GenerateReport:
    """Write the synthetic log for ``gen`` under ``out_dir`` (replacing any previous output whole)."""
    out_dir = Path(out_dir)
    days = [gen.start + dt.timedelta(days=i) for i in range(gen.n_days)]
    bounds = _local_day_starts([gen.start - dt.timedelta(days=1), *days], tz)
    cat = _catalog(gen)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    per_day = np.zeros(len(days), dtype=np.int64)
    active_users = 0
    try:
        files = []
        for d in days:
            # The drop-zone layout <incoming>/<source>/dt=<day>/ (tasks.layers.incoming_partition).
            folder = partition_dir(tmp, DAY_KEY, d)
            folder.mkdir()
            path = folder / "events.csv"
            path.write_text(",".join(EVENT_COLUMNS) + "\n")
            files.append(path)
        for chunk, first_user in enumerate(range(0, gen.n_users, gen.chunk_users)):
            n = min(gen.chunk_users, gen.n_users - first_user)
            frame = _chunk_events(gen, cat, chunk, first_user, n, bounds)
            active_users += frame["user_id"].nunique()
            for d, part in frame.groupby("_day", sort=True):
                part.drop(columns="_day").to_csv(
                    files[d], mode="a", header=False, index=False, float_format="%.2f", lineterminator="\n"
                )
                per_day[d] += len(part)
            log.info("chunk %d: users %d..%d, %d events", chunk, first_user, first_user + n - 1, len(frame))
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = GenerateReport(
        out_dir=out_dir,
        days=tuple(days),
        n_users=gen.n_users,
        n_active_users=active_users,
        n_events=int(per_day.sum()),
        events_per_day={d.isoformat(): int(n) for d, n in zip(days, per_day, strict=True)},
    )
    log.info("synthetic log: %d events of %d active users in %s", report.n_events, active_users, out_dir)
    return report


def latent_state(gen: GeneratorConfig, tz: str = "UTC") -> LatentState:
    """The hidden variables of the log ``generate(gen, ..., tz)`` writes (the same draws, nothing written)."""
    days = [gen.start + dt.timedelta(days=i) for i in range(gen.n_days)]
    bounds = _local_day_starts([gen.start - dt.timedelta(days=1), *days], tz)
    cat = _catalog(gen)
    parts: list[LatentState] = []
    for chunk, first_user in enumerate(range(0, gen.n_users, gen.chunk_users)):
        _chunk_events(gen, cat, chunk, first_user, min(gen.chunk_users, gen.n_users - first_user), bounds, parts)
    offsets = np.cumsum([0] + [len(p.user_ids) for p in parts])[:-1]
    return LatentState(
        user_ids=np.concatenate([p.user_ids for p in parts]),
        p_active=np.concatenate([p.p_active for p in parts]),
        session_rate=np.concatenate([p.session_rate for p in parts]),
        len_scale=np.concatenate([p.len_scale for p in parts]),
        baseline=np.concatenate([p.baseline for p in parts]),
        drift=np.concatenate([p.drift for p in parts]),
        bounds=bounds,
        mission_user=np.concatenate([p.mission_user + off for p, off in zip(parts, offsets, strict=True)]),
        mission_research_s=np.concatenate([p.mission_research_s for p in parts]),
        mission_buy_s=np.concatenate([p.mission_buy_s for p in parts]),
    )


def fresh_purchase_probability(
    p_active: np.ndarray, session_rate: np.ndarray, len_scale: np.ndarray, intent_logit_mean: np.ndarray
) -> np.ndarray:
    """P(a purchase on a day from what that day itself starts: a mission converting the same day or an
    impulse buy), per user [U], given the traits and the day's expected intent logit (its AR(1)
    prediction from the day before, baseline + INTENT_RHO x drift). The day's intent noise is integrated
    out (Gauss-Hermite); sessions that cross midnight are ignored."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(32)
    weights = weights / weights.sum()
    logits = np.asarray(intent_logit_mean, dtype=np.float64)[:, None] + INTENT_NOISE * nodes[None, :]
    intent = (1.0 / (1.0 + np.exp(-logits))) @ weights  # [U] E[daily mission probability]
    mission_buy = intent * MISSION_CONVERT * MISSION_SAME_DAY
    # A browse session can end in an impulse buy only if it has a second event; 1 + Poisson(rate) sessions.
    impulse = IMPULSE_BUY * (1.0 - 1.0 / (1.0 + SESSION_LEN_MEAN * np.asarray(len_scale, dtype=np.float64)))
    no_impulse = (1.0 - impulse) * np.exp(-np.asarray(session_rate, dtype=np.float64) * impulse)
    return np.asarray(p_active, dtype=np.float64) * (1.0 - (1.0 - mission_buy) * no_impulse)


def missions_at_cutoff(state: LatentState, day: int) -> tuple[np.ndarray, np.ndarray]:
    """(pending, open) per user [U] at the cutoff opening simulated day ``day`` (1 <= day <= n_days).

    open: a mission researched the day before whose buy session has not started by the cutoff, the
    trace in the history that says a purchase may follow (whether it converts is not observable).
    pending: an open mission that buys during ``day``; its purchase is decided before the cutoff.
    """
    if not 1 <= day < len(state.bounds) - 1:
        raise ValueError(f"day must be a generated day index in 1..{len(state.bounds) - 2}, got {day}")
    cut, end = state.bounds[day], state.bounds[day + 1]
    research, buy_s = state.mission_research_s, state.mission_buy_s
    is_open = (research >= state.bounds[day - 1]) & (research < cut) & ((buy_s < 0) | (buy_s >= cut))
    is_pending = is_open & (buy_s >= cut) & (buy_s < end)
    n = len(state.user_ids)
    return (
        np.bincount(state.mission_user[is_pending], minlength=n) > 0,
        np.bincount(state.mission_user[is_open], minlength=n) > 0,
    )


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old)


def main(argv: list[str] | None = None) -> GenerateReport:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--n-users", type=int, help="override generator.n_users")
    parser.add_argument("--n-days", type=int, help="override generator.n_days")
    parser.add_argument("--out", type=Path, help="output folder (default: <incoming>/synthetic)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    overrides = {k: v for k, v in (("n_users", args.n_users), ("n_days", args.n_days)) if v is not None}
    gen = GeneratorConfig.model_validate({**cfg.generator.model_dump(), **overrides})
    report = generate(gen, args.out or incoming_dir(cfg, "synthetic"), tz=cfg.pipeline.timezone)
    print(f"wrote {report.n_events} events for {len(report.days)} days to {report.out_dir}")
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
