"""bench text_zero_shot: on the real REES46 sample, how well the pretrained encoder's category-code vectors rank a
category for a user without any training signal for it (issue 26.7).

For each user who moves to a category they have not touched before (the category of their last event, absent
from their earlier events, with a category code), the candidates are every category of the sample with a code
that the user has not touched; they are ranked by the cosine similarity between the candidate's code vector and
the mean code vector of the user's earlier events. Nothing is learned: no label of any category is read. Beside
it, the same candidates ranked by popularity (event counts of the whole sample, the usual zero-knowledge
baseline, which does read every user's events) and by chance (k / candidates). HitRate@k and MRR with 95%
bootstrap intervals over users; the text rank minus the popularity rank, paired."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from bench.harness import r
from tasks.backtest_report import interval
from tasks.config import DEFAULT_CONFIG, REPO_ROOT, load_config
from tasks.errors import DataError

SAMPLE = REPO_ROOT / ".." / "shared" / "data" / "rees46_2019oct_sample.csv"

K = (5, 10)
RESAMPLES = 2000


def moves(events: pd.DataFrame) -> pd.DataFrame:
    """One row per user whose last event is in a category new to them: user_id, target (its category), context
    (the categories of the earlier events, in time order)."""
    rows = []
    for user_id, ev in events.sort_values(["user_id", "event_time"], kind="stable").groupby("user_id", sort=False):
        cats = ev["category_id"].tolist()
        if len(cats) < 2 or cats[-1] in cats[:-1]:
            continue
        rows.append({"user_id": user_id, "target": cats[-1], "context": cats[:-1]})
    return pd.DataFrame(rows)


def ranks(scores: np.ndarray, target: int, excluded: np.ndarray) -> int:
    """1-based rank of ``target`` among the categories not ``excluded`` (ties count against it)."""
    keep = ~excluded
    return int((scores[keep] >= scores[target]).sum())


def run(args: argparse.Namespace) -> dict:
    from tasks.models.text_encoder import TextEncoder

    path = SAMPLE.resolve()
    if not path.is_file():
        raise DataError(f"the REES46 sample {path} is not there (see ../shared/data/README.md)")
    events = pd.read_csv(path, dtype={"category_id": str, "user_id": str})
    events["category_code"] = events["category_code"].fillna("").str.strip().str.lower()
    events = events[events["category_code"] != ""]
    # One code per category id (the sample has exactly one; the most frequent if an export had several).
    code = events.groupby("category_id")["category_code"].agg(lambda s: s.value_counts().index[0])
    categories = code.index.to_numpy()
    index = {c: i for i, c in enumerate(categories)}
    encoder = TextEncoder.from_config(load_config(DEFAULT_CONFIG, use_env=False).text)
    vectors = encoder.encode(code.tolist())  # [n_categories, dim], unit length
    popularity = events["category_id"].map(index).value_counts().reindex(range(len(categories)), fill_value=0)
    pop = popularity.to_numpy(dtype=np.float64)
    users = moves(events)
    n = len(users) if not args.quick else min(len(users), 200)
    users = users.head(n)

    text_rank, pop_rank, n_cands = [], [], []
    for row in users.itertuples():
        context = np.array([index[c] for c in row.context])
        target = index[row.target]
        excluded = np.zeros(len(categories), dtype=bool)
        excluded[context] = True
        profile = vectors[context].mean(axis=0)
        text_rank.append(ranks(vectors @ profile, target, excluded))
        pop_rank.append(ranks(pop, target, excluded))
        n_cands.append(int((~excluded).sum()))
    text_r, pop_r, cands = np.array(text_rank), np.array(pop_rank), np.array(n_cands, dtype=np.float64)

    rng = np.random.default_rng(0)
    boot = rng.integers(0, n, size=(RESAMPLES, n))

    def stat(values: np.ndarray) -> tuple[float, tuple[float, float]]:
        return float(values.mean()), interval(values[boot].mean(axis=1))

    table = []
    metrics = {f"HitRate@{k}": lambda rk, k=k: (rk <= k).astype(np.float64) for k in K}
    metrics["MRR"] = lambda rk: 1.0 / rk
    for name, f in metrics.items():
        t, (t_lo, t_hi) = stat(f(text_r))
        p, (p_lo, p_hi) = stat(f(pop_r))
        d, (d_lo, d_hi) = stat(f(text_r) - f(pop_r))
        if name == "MRR":
            chance = float(np.mean([np.mean(1.0 / np.arange(1, c + 1)) for c in cands]))
        else:
            chance = float(np.mean(np.minimum(int(name.split("@")[1]) / cands, 1.0)))
        table.append(
            {
                "metric": name,
                "text (code vectors)": f"{t:.3f} [{t_lo:.3f}, {t_hi:.3f}]",
                "popularity": f"{p:.3f} [{p_lo:.3f}, {p_hi:.3f}]",
                "text minus popularity": f"{d:+.3f} [{d_lo:+.3f}, {d_hi:+.3f}]",
                "chance": r(chance, 3),
            }
        )
    return {
        "description": "Zero-shot category ranking on the REES46 sample from category-code text alone (the "
        "pretrained encoder's vectors, nothing trained), against popularity and chance.",
        "table": table,
        "notes": [
            f"{path.name}: {len(events)} events with a category code, {len(categories)} categories with a code; "
            f"{n} users whose last event is in a category new to them; {cands.mean():.0f} candidates per user on "
            f"average (every coded category the user has not touched). Encoder {encoder.identity}.",
            "Text: cosine similarity of each candidate's code vector to the mean code vector of the user's earlier "
            "events. Popularity: the candidate's event count in the whole sample. 95% intervals: bootstrap over "
            f"users ({RESAMPLES} resamples), the difference paired.",
        ],
        "users": n,
        "categories": len(categories),
    }
