"""Builder of small training-set folders in the layout of spark_jobs.training_set, with learnable signal.

Signal (so a model can beat chance): a cart event among the last few events makes a purchase likely,
recent views of category "cat_0" make a cart likely, any fav event makes another fav likely. Each
user's candidate categories (``user_category/``) are the categories in their sequence; a purchase in a
candidate is likely when it holds the user's most recent event or a cart event.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.schema import LABEL_COLUMNS, SEQUENCE_COLUMNS, USER_CATEGORY_LABEL

FEATURE_COLUMNS = (
    "f_view_count_7d",
    "f_cart_count_7d",
    "f_fav_count_7d",
    "f_purchase_count_30d",
    "f_days_since_last_event",
    "f_avg_price",
)

SCHEMA = pa.schema(
    [
        ("ds", pa.date32()),
        ("user_id", pa.string()),
        *[(c, pa.float64()) for c in FEATURE_COLUMNS],
        ("seq_event_type", pa.list_(pa.int32())),
        ("seq_category", pa.list_(pa.string())),
        ("seq_item_bucket", pa.list_(pa.int32())),
        ("seq_gap_cutoff_bucket", pa.list_(pa.int32())),
        ("seq_gap_prev_bucket", pa.list_(pa.int32())),
        ("seq_hour", pa.list_(pa.int32())),
        *[(c, pa.int32()) for c in LABEL_COLUMNS],
        ("weight", pa.float64()),
    ]
)


PAIR_FEATURE_COLUMNS = ("f_uc_view_7d", "f_uc_cart_7d", "f_uc_recency_any", "f_uc_share")

PAIR_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("category_id", pa.string()),
        ("ds", pa.date32()),
        *[(c, pa.float64()) for c in PAIR_FEATURE_COLUMNS],
        (USER_CATEGORY_LABEL, pa.int32()),
    ]
)


def candidate_rows(users: dict[str, list], rng: np.random.Generator) -> dict[str, list]:
    """The user x category rows of ``users`` (make_rows output), one per distinct category in a sequence."""
    out: dict[str, list] = {f.name: [] for f in PAIR_SCHEMA}
    for uid, ds, types, cats in zip(
        users["user_id"], users["ds"], users["seq_event_type"], users["seq_category"], strict=True
    ):
        types = np.asarray(types)
        for cat in sorted(set(cats)):
            at = np.asarray([c == cat for c in cats])
            last = len(cats) - 1 - int(np.flatnonzero(at)[-1])
            carted = bool(((types == 2) & at).any())
            p_buy = _sigmoid(-2.2 + 2.0 * (last == 0) + 1.5 * carted)
            out["user_id"].append(uid)
            out["category_id"].append(cat)
            out["ds"].append(ds)
            out["f_uc_view_7d"].append(float(((types == 1) & at).sum()))
            out["f_uc_cart_7d"].append(float(((types == 2) & at).sum()))
            out["f_uc_recency_any"].append(float(last))
            out["f_uc_share"].append(float(at.mean()))
            out[USER_CATEGORY_LABEL].append(int(rng.random() < p_buy))
    return out


# Text of category cat_k with text=True: its code, and a query about it on some events.
CATEGORY_CODES = (
    "electronics.smartphone",
    "apparel.shoes.sneakers",
    "furniture.living_room.sofa",
    "kids.toys.doll",
    "appliances.kitchen.kettle",
    "electronics.audio.headphone",
    "sport.bicycle",
    "apparel.jeans",
    "computers.notebook",
    "furniture.bedroom.bed",
)


def category_code(category: str) -> str:
    return CATEGORY_CODES[int(category.split("_")[-1]) % len(CATEGORY_CODES)]


def _add_text(users: dict[str, list], pairs: dict[str, list], rng: np.random.Generator) -> None:
    """seq_text on the user rows (a query on a fifth of the events, else the category code; "" on a tenth) and
    category_text on the candidate rows, in place."""
    texts = []
    for cats in users["seq_category"]:
        row = []
        for c in cats:
            u = rng.random()
            row.append("" if u < 0.1 else f"cheap {category_code(c).split('.')[-1]}" if u < 0.3 else category_code(c))
        texts.append(row)
    users["seq_text"] = texts
    pairs["category_text"] = [category_code(c) for c in pairs["category_id"]]


def _write_texts(directory: Path, tables: list[pa.Table], pair_tables: list[pa.Table], seed: int, dim: int) -> dict:
    """texts/ with a random unit vector per distinct text (as spark_jobs.training_set writes it); its manifest entry."""
    found = set()
    for t in tables:
        found.update(x for row in t.column("seq_text").to_pylist() for x in row if x)
    for t in pair_tables:
        found.update(x for x in t.column("category_text").to_pylist() if x)
    texts = sorted(found)
    vectors = np.random.default_rng(seed + 20_000).normal(size=(len(texts), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    (directory / "texts").mkdir(parents=True, exist_ok=True)
    table = pa.table({"text": texts, "vector": pa.array(list(vectors), type=pa.list_(pa.float32()))})
    pq.write_table(table, directory / "texts" / "part-00000.parquet")
    return {"encoder": "random-unit-vectors", "dim": dim, "texts": len(texts)}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


def make_rows(
    n_users: int, ds: dt.date, rng: np.random.Generator, *, sequence_length: int, item_buckets: int, n_categories: int
) -> dict[str, list]:
    cols: dict[str, list] = {f.name: [] for f in SCHEMA}
    for u in range(n_users):
        n = int(rng.integers(0, sequence_length + 1))
        types = rng.choice([1, 2, 3, 4], size=n, p=[0.72, 0.14, 0.09, 0.05])
        cats = [f"cat_{c}" for c in rng.integers(0, n_categories, size=n)]
        recent = types[-4:]
        recent_cats = cats[-4:]
        p_buy = _sigmoid(-2.6 + 3.0 * (2 in recent) + 0.6 * (4 in types))
        p_cart = _sigmoid(-2.4 + 2.8 * ("cat_0" in recent_cats))
        p_fav = _sigmoid(-2.6 + 2.8 * (3 in types))
        cols["ds"].append(ds)
        cols["user_id"].append(f"u{u}")
        cols["f_view_count_7d"].append(float((types == 1).sum()))
        cols["f_cart_count_7d"].append(float((types == 2).sum()))
        cols["f_fav_count_7d"].append(float((types == 3).sum()))
        cols["f_purchase_count_30d"].append(float((types == 4).sum() + rng.poisson(0.3)))
        cols["f_days_since_last_event"].append(None if n == 0 or rng.random() < 0.05 else float(rng.exponential(3.0)))
        cols["f_avg_price"].append(None if rng.random() < 0.1 else float(rng.lognormal(3.0, 1.0)))
        cols["seq_event_type"].append(types.astype(int).tolist())
        cols["seq_category"].append(cats)
        cols["seq_item_bucket"].append(rng.integers(1, item_buckets + 1, size=n).tolist())
        cols["seq_gap_cutoff_bucket"].append(np.sort(rng.integers(0, 22, size=n))[::-1].tolist())
        cols["seq_gap_prev_bucket"].append(rng.integers(0, 18, size=n).tolist())
        cols["seq_hour"].append(rng.integers(0, 24, size=n).tolist())
        cols["label_purchase"].append(int(rng.random() < p_buy))
        cols["label_cart"].append(int(rng.random() < p_cart))
        cols["label_fav"].append(int(rng.random() < p_fav))
        cols["weight"].append(float(rng.choice([1.0, 1.0, 1.0, 2.0])))
    return cols


def write_training_set(
    directory: Path,
    n_users: int = 200,
    seed: int = 0,
    *,
    sequence_length: int = 12,
    item_buckets: int = 64,
    n_categories: int = 10,
    n_train_cutoffs: int = 3,
    files_per_split: int = 2,
    first_cutoff: dt.date = dt.date(2026, 1, 5),
    text_dim: int = 0,
) -> Path:
    """Write ``<directory>/{train,val,test}/part-*.parquet``, ``user_category/{train,val,test}/`` and
    ``manifest.json``; returns ``directory``. With ``text_dim``, also seq_text and category_text columns and a
    ``texts/`` table of random unit vectors of that width."""
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    # A separate stream for the candidate labels keeps the user rows of a seed unchanged.
    cand_rng = np.random.default_rng(seed + 10_000)
    days = [first_cutoff + dt.timedelta(days=i) for i in range(n_train_cutoffs + 2)]
    cutoffs = {"train": days[:n_train_cutoffs], "val": [days[-2]], "test": [days[-1]]}
    rows_per_split = {}
    text_rng = np.random.default_rng(seed + 30_000)
    schema, pair_schema = SCHEMA, PAIR_SCHEMA
    if text_dim:
        schema = schema.append(pa.field("seq_text", pa.list_(pa.string())))
        pair_schema = pair_schema.append(pa.field("category_text", pa.string()))
    all_tables, all_pairs = [], []
    for split, split_days in cutoffs.items():
        out = directory / split
        out.mkdir(parents=True, exist_ok=True)
        users = [
            make_rows(
                n_users, d, rng, sequence_length=sequence_length, item_buckets=item_buckets, n_categories=n_categories
            )
            for d in split_days
        ]
        pair_rows = [candidate_rows(u, cand_rng) for u in users]
        if text_dim:
            for u, pr in zip(users, pair_rows, strict=True):
                _add_text(u, pr, text_rng)
        table = pa.concat_tables(pa.Table.from_pydict(u, schema=schema) for u in users)
        pairs = pa.concat_tables(pa.Table.from_pydict(pr, schema=pair_schema) for pr in pair_rows)
        all_tables.append(table)
        all_pairs.append(pairs)
        rows_per_split[split] = table.num_rows
        (directory / "user_category" / split).mkdir(parents=True, exist_ok=True)
        for i in range(files_per_split):
            part = table.filter(pa.array(np.arange(table.num_rows) % files_per_split == i))
            pq.write_table(part, out / f"part-{i:05d}.parquet")
            # Candidate files split differently from the user files, as range partitioning makes them.
            lo, hi = pairs.num_rows * i // files_per_split, pairs.num_rows * (i + 1) // files_per_split
            pq.write_table(pairs.slice(lo, hi - lo), directory / "user_category" / split / f"part-{i:05d}.parquet")
    manifest = {
        "id": directory.name,
        "cutoffs": {k: [d.isoformat() for d in v] for k, v in cutoffs.items()},
        "feature_columns": list(FEATURE_COLUMNS),
        "sequence_columns": list(SEQUENCE_COLUMNS),
        "sequence_length": sequence_length,
        "item_buckets": item_buckets,
        "rows": rows_per_split,
        "user_category": {"feature_columns": list(PAIR_FEATURE_COLUMNS), "label_column": USER_CATEGORY_LABEL},
        "text": _write_texts(directory, all_tables, all_pairs, seed, text_dim) if text_dim else None,
        "source": {"dt_last": days[-1].isoformat()},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory


def with_candidate_arrays(ts: Path, users: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``users`` (rows of the test split of ``ts``) with their test candidates as the parallel arrays scoring
    hands the model (cand_category_id, cand_<f_uc_*>; a null array without candidates), and a "_key" column
    "<ds>|<user_id>"; plus the candidate rows themselves with the same key."""
    cand = pd.read_parquet(ts / "user_category" / "test").sort_values(["ds", "user_id", "category_id"])
    out = users.copy()
    out["_key"] = out["ds"].astype(str) + "|" + out["user_id"]
    cand["_key"] = cand["ds"].astype(str) + "|" + cand["user_id"]
    grouped = cand.groupby("_key")
    arrays = {"cand_category_id": grouped["category_id"].apply(list)}
    if "category_text" in cand.columns:
        arrays["cand_category_text"] = grouped["category_text"].apply(list)
    for c in json.loads((ts / "manifest.json").read_text())["user_category"]["feature_columns"]:
        arrays["cand_" + c] = grouped[c].apply(list)
    out = out.join(pd.DataFrame(arrays), on="_key")
    for c in arrays:  # users without candidates: a null array, as Spark hands it over
        out[c] = out[c].map(lambda v: v if isinstance(v, list) else None)
    return out, cand
