"""What the sequences could add to the purchase model on synthetic data (the sequence-signal study of bench
model_quality): oracles from the generator's hidden variables, hand-made tail features, sequence ablations,
split and paired-bootstrap ROC-AUCs, and the notes worded from their numbers. The pure pieces are shared
with tests/unit/test_bench_signal.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from bench.harness import r
from tasks.config import PipelineConfig

# Largest seq_gap_cutoff_bucket of an event in the day before a midnight cutoff: 1 + floor(log2(1 + 86400)).
# The bucket also holds events 24-36 h old; the tail pattern reads "roughly the last day".
LAST_DAY_GAP_BUCKET = 17
TAIL_FEATURES = ("s_tail_events", "s_tail_carts", "s_tail_favs", "s_tail_item_repeat", "s_tail_category_share")


def tail_pattern_features(pdf) -> Any:
    """Of each row's sequence (seq_* arrays, oldest first), the events after its last purchase that lie
    in roughly the last day before the cutoff: count, carts, favs, most views of one item bucket and
    the largest share of one category. The trace a shopping mission's research session leaves (a
    focused burst, target item revisited, carts, no purchase yet), summarised by hand from the same
    columns the sequence models read; a DataFrame of TAIL_FEATURES on the index of ``pdf``."""
    import numpy as np
    import pandas as pd

    from tasks.schema import EVENT_TYPE_INDEX

    purchase, cart, fav = EVENT_TYPE_INDEX["purchase"], EVENT_TYPE_INDEX["cart"], EVENT_TYPE_INDEX["fav"]
    out = np.zeros((len(pdf), len(TAIL_FEATURES)))
    columns = zip(
        pdf["seq_event_type"], pdf["seq_gap_cutoff_bucket"], pdf["seq_item_bucket"], pdf["seq_category"], strict=True
    )
    for i, (types, gaps, items, cats) in enumerate(columns):
        types, gaps = np.asarray(types), np.asarray(gaps)
        bought = np.flatnonzero(types == purchase)
        start = bought[-1] + 1 if len(bought) else 0
        tail = np.arange(len(types)) >= start
        tail &= gaps <= LAST_DAY_GAP_BUCKET
        n = int(tail.sum())
        if n == 0:
            continue
        _, item_counts = np.unique(np.asarray(items)[tail], return_counts=True)
        _, cat_counts = np.unique(np.asarray(cats, dtype=object)[tail].astype(str), return_counts=True)
        out[i] = (n, (types[tail] == cart).sum(), (types[tail] == fav).sum(), item_counts.max(), cat_counts.max() / n)
    return pd.DataFrame(out, columns=list(TAIL_FEATURES), index=pdf.index)


def shuffled_sequences(pdf, seed: int) -> Any:
    """``pdf`` with each row's events in a random order (one permutation per row, applied to every seq_*
    column, so each event keeps its fields, gaps included): what is left is the bag of events."""
    import numpy as np

    from tasks.schema import SEQUENCE_COLUMNS

    rng = np.random.default_rng(seed)
    out = pdf.copy()
    perms = [rng.permutation(len(v)) for v in pdf[SEQUENCE_COLUMNS[0]]]
    for col in SEQUENCE_COLUMNS:
        out[col] = [np.asarray(v)[perm] for v, perm in zip(pdf[col], perms, strict=True)]
    return out


def swapped_sequences(pdf, seed: int) -> Any:
    """``pdf`` with the seq_* columns of each row taken, whole, from another row (a random permutation
    of the rows; the f_* columns stay): a model whose predictions do not move ignores the sequences."""
    import numpy as np

    from tasks.schema import SEQUENCE_COLUMNS

    order = np.random.default_rng(seed).permutation(len(pdf))
    out = pdf.copy()
    for col in SEQUENCE_COLUMNS:
        out[col] = pdf[col].to_numpy()[order]
    return out


def scrambled_items(pdf, item_buckets: int, seed: int) -> Any:
    """``pdf`` with every event's seq_item_bucket replaced by a uniform random bucket in 1..item_buckets:
    order, types, categories and times stay, repeat visits of one item are gone."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = pdf.copy()
    out["seq_item_bucket"] = [rng.integers(1, item_buckets + 1, size=len(v)) for v in pdf["seq_item_bucket"]]
    return out


def split_auc(y, score, pending) -> tuple[float, float, float]:
    """ROC-AUC of ``score`` over all rows, over mission buyers (y & pending) vs non-buyers, and over the
    other buyers (y & ~pending) vs non-buyers; NaN where a part has no rows."""
    from sklearn.metrics import roc_auc_score

    def auc(pos):
        keep = pos | (y == 0)
        return float(roc_auc_score(y[keep], score[keep])) if pos.any() and (y == 0).any() else float("nan")

    return auc(y == 1), auc((y == 1) & pending), auc((y == 1) & ~pending)


def paired_auc_difference(y, a, b, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """ROC-AUC(b) - ROC-AUC(a) on the same rows [N], with a 95% percentile interval from resampling the
    rows (the same resample for both scores, so the shared noise of the test users cancels)."""
    import numpy as np
    from scipy.stats import rankdata

    y, a, b = np.asarray(y), np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)

    def auc(idx: np.ndarray) -> np.ndarray:
        """ROC-AUC of a and b on rows idx [R, N] (Mann-Whitney from mid-ranks) -> [R, 2]."""
        yy = y[idx]
        n_pos = yy.sum(axis=1)
        n_neg = idx.shape[1] - n_pos
        out = np.empty((len(idx), 2))
        for j, score in enumerate((a, b)):
            ranks = rankdata(score[idx], axis=1)
            out[:, j] = ((ranks * yy).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        return out

    point = auc(np.arange(len(y))[None, :])[0]
    rng = np.random.default_rng(seed)
    boot = auc(rng.integers(0, len(y), size=(n_boot, len(y))))
    diff = boot[:, 1] - boot[:, 0]
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return {"diff": float(point[1] - point[0]), "lo": float(lo), "hi": float(hi)}


def sequence_signal(cfg: PipelineConfig, ts_dir: Path, manifest: dict, gen, models: dict[str, dict]) -> dict:
    """Why the sequence models do (not) beat LightGBM on the synthetic test cutoff, measured.

    Uses the generator's hidden variables (tasks.sources.synthetic.latent_state, the same draws as the
    log): which users had a shopping mission open at the cutoff, and whether it buys. Scores compared on
    the test rows: oracles (Bayes scores of latent information, an upper bound for models of the
    history), LightGBM on f_* (the yardstick, refitted), LightGBM on f_* plus the open-mission flag or
    plus tail_pattern_features, and the trained LSTM / BERT on the original sequences, on
    order-shuffled ones and on ones with scrambled item buckets. ``models``: {model_type: {"model_uri": ...}}.
    """
    import mlflow
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from tasks.models.baselines import fit_predict, lgbm_classifier
    from tasks.models.encoding import encode_targets
    from tasks.registry import mlflow_store
    from tasks.schema import SEQUENCE_COLUMNS
    from tasks.sources.synthetic import (
        INTENT_RHO,
        fresh_purchase_probability,
        latent_state,
        missions_at_cutoff,
    )
    from tasks.training.data import read_files

    state = latent_state(gen, cfg.pipeline.timezone)
    row_of = pd.Series(np.arange(len(state.user_ids)), index=state.user_ids)

    def latent_at(frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per row of (user_id, ds): pending, open, fresh purchase probability at that cutoff."""
        out = {k: np.zeros(len(frame)) for k in ("pending", "open", "fresh")}
        for ds, idx in frame.groupby(frame["ds"].astype(str)).indices.items():
            day = (dt.date.fromisoformat(ds) - gen.start).days + 1
            users = row_of[frame["user_id"].to_numpy()[idx]].to_numpy()
            pending, is_open = missions_at_cutoff(state, day)
            fresh = fresh_purchase_probability(
                state.p_active,
                state.session_rate,
                state.len_scale,
                state.baseline + INTENT_RHO * state.drift[:, day - 1],
            )
            out["pending"][idx], out["open"][idx], out["fresh"][idx] = pending[users], is_open[users], fresh[users]
        return out

    feats = list(manifest["feature_columns"])
    cols = ["user_id", "ds", "weight", *feats, *SEQUENCE_COLUMNS, "label_purchase", "label_cart", "label_fav"]
    split_files = {s: sorted((ts_dir / s).glob("*.parquet")) for s in ("train", "test")}
    train, test = (read_files(split_files[s], cols) for s in ("train", "test"))
    lat_train, lat_test = latent_at(train), latent_at(test)
    y = test["label_purchase"].to_numpy(dtype=np.int64)
    pending = lat_test["pending"].astype(bool)
    is_open = lat_test["open"].astype(bool)
    # P(an open mission buys during the day), over the whole population at the (first) test cutoff.
    test_day = (dt.date.fromisoformat(str(test["ds"].iloc[0])) - gen.start).days + 1
    pending_all, open_all = missions_at_cutoff(state, test_day)
    p_buy_if_open = float(pending_all[open_all].mean())
    fresh = lat_test["fresh"]

    y_train, w_train = (t.numpy() for t in encode_targets(train))
    seed = cfg.training.seed

    x_train = train[feats].to_numpy(dtype=np.float64, na_value=np.nan)
    x_test = test[feats].to_numpy(dtype=np.float64, na_value=np.nan)
    tail_train, tail_test = tail_pattern_features(train).to_numpy(), tail_pattern_features(test).to_numpy()

    def lgbm(
        target: np.ndarray,
        weight: np.ndarray,
        extra_train: np.ndarray | None = None,
        extra_test: np.ndarray | None = None,
    ) -> np.ndarray:
        x_tr, x_te = x_train, x_test
        if extra_train is not None:
            x_tr, x_te = np.column_stack([x_tr, extra_train]), np.column_stack([x_te, extra_test])
        return fit_predict(lambda: lgbm_classifier(seed), x_tr, target, weight, x_te)

    scores: dict[str, tuple[str, np.ndarray]] = {
        "latent oracle": ("knows which open missions buy, traits, intent", 1 - (1 - pending) * (1 - fresh)),
        "mission oracle": (
            "knows open missions (not whether they convert), traits, intent",
            1 - (1 - is_open * p_buy_if_open) * (1 - fresh),
        ),
        "propensity oracle": ("knows traits and intent, no missions", fresh),
        "LightGBM f_*": ("yardstick features (refitted as tasks.train does)", lgbm(y_train[:, 0], w_train)),
        "LightGBM f_* + open flag": (
            "f_* plus the latent open-mission flag",
            lgbm(y_train[:, 0], w_train, lat_train["open"], lat_test["open"]),
        ),
        "LightGBM f_* + tail pattern": (
            "f_* plus tail_pattern_features of seq_*",
            lgbm(y_train[:, 0], w_train, tail_train, tail_test),
        ),
    }
    # How recognisable an open mission is from what the models see: LightGBM trained on the latent flag.
    open_train, ones = lat_train["open"].astype(np.int64), np.ones(len(train))
    detection = {
        "f_*": float(roc_auc_score(is_open, lgbm(open_train, ones))),
        "f_* + tail pattern": float(roc_auc_score(is_open, lgbm(open_train, ones, tail_train, tail_test))),
    }
    model_input = test[["user_id", *feats, *SEQUENCE_COLUMNS]]
    variants = {
        "order shuffled": shuffled_sequences(model_input, seed),
        "items scrambled": scrambled_items(model_input, cfg.features.item_buckets, seed),
        "sequences swapped": swapped_sequences(model_input, seed),
    }
    ablations: dict[str, dict[str, np.ndarray]] = {name: {} for name in variants}
    with mlflow_store(cfg):
        for model_type, run in models.items():
            model = mlflow.pyfunc.load_model(run["model_uri"])
            probs = model.predict(model_input)["p_purchase"].to_numpy()
            scores[model_type] = ("f_* + seq_* (trained by tasks.train)", probs)
            for name, frame in variants.items():
                ablations[name][model_type] = model.predict(frame)["p_purchase"].to_numpy()
    base = scores["LightGBM f_*"][1]
    differences = {
        "LightGBM f_* + tail pattern vs LightGBM f_*": paired_auc_difference(
            y, base, scores["LightGBM f_* + tail pattern"][1]
        )
    }
    for model_type in models:
        differences[f"{model_type} vs LightGBM f_*"] = paired_auc_difference(y, base, scores[model_type][1])
        for name, res in ablations.items():
            differences[f"{model_type} {name} vs {model_type}"] = paired_auc_difference(
                y, scores[model_type][1], res[model_type]
            )
    ablations = {a: {m: split_auc(y, p, pending) for m, p in res.items()} for a, res in ablations.items()}
    table, raw = [], {}
    keys = ("roc_auc", "mission_buyers_auc", "other_buyers_auc")
    for name, (info, score) in scores.items():
        full, mission, other = split_auc(y, np.asarray(score, dtype=np.float64), pending)
        row = {
            "score": name,
            "information": info,
            "test ROC-AUC": r(full, 4),
            "mission buyers vs non-buyers": r(mission, 4),
            "other buyers vs non-buyers": r(other, 4),
        }
        row.update({f"ROC-AUC, {a}": r(res[name][0], 4) if name in res else "" for a, res in ablations.items()})
        table.append(row)
        raw[name] = {
            "roc_auc": full,
            "mission_buyers_auc": mission,
            "other_buyers_auc": other,
            **{
                a.replace(" ", "_"): dict(zip(keys, res[name], strict=True))
                for a, res in ablations.items()
                if name in res
            },
        }
    return {
        "table": table,
        "scores": raw,
        "open_detection_auc": detection,
        "auc_differences": differences,
        "test_rows": len(y),
        "buyers": int(y.sum()),
        "mission_buyers": int((y.astype(bool) & pending).sum()),
        "pending_labelled_buyers": float(y[pending].mean()) if pending.any() else float("nan"),
        "open_rows": int(is_open.sum()),
        "p_buy_if_open": p_buy_if_open,
    }


SIGNAL_TITLE = (
    "Synthetic test cutoff: ROC-AUC of each score over all users, over the buyers completing a shopping mission "
    "researched before the cutoff (vs all non-buyers) and over the other buyers (same-day missions, impulse buys)"
)


def signal_notes(sig: dict, test_cutoffs: list[str]) -> list[str]:
    """The findings of ``sequence_signal``'s result, worded from its numbers. A difference of ROC-AUC
    counts only when its 95% paired bootstrap interval excludes 0."""
    sc = {k: v["roc_auc"] for k, v in sig["scores"].items()}
    part = {k: (v["mission_buyers_auc"], v["other_buyers_auc"]) for k, v in sig["scores"].items()}
    diff = sig["auc_differences"]
    seq = [m for m in ("lstm", "bert") if m in sc]
    lgbm, open_flag = sc["LightGBM f_*"], sc["LightGBM f_* + open flag"]
    det = sig["open_detection_auc"]

    def ci(d: dict) -> str:
        return f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"

    def real(d: dict) -> bool:
        return d["lo"] > 0 or d["hi"] < 0

    def per_model(key: str) -> str:
        return ", ".join(f"{m.upper()} {ci(diff[key.format(m=m)])}" for m in seq)

    notes = [
        f"Sequence signal (synthetic test cutoff {', '.join(test_cutoffs)}; hidden variables from "
        f"tasks.sources.synthetic.latent_state): {sig['buyers']} of {sig['test_rows']} users buy; "
        f"{sig['mission_buyers']} ({100 * sig['mission_buyers'] / sig['buyers']:.0f}%) complete a shopping mission "
        f"researched the day before (the purchases a history can foresee beyond a user's propensity; "
        f"{100 * sig['pending_labelled_buyers']:.1f}% of the users with such a purchase due are labelled buyers), "
        f"the rest are same-day missions and impulse buys. {sig['open_rows']} users have a mission open at the "
        f"cutoff; an open mission buys that day with p = {sig['p_buy_if_open']:.2f}.",
        f"Ceiling: the latent oracle (Bayes score knowing which open missions buy) reaches ROC-AUC "
        f"{r(sc['latent oracle'], 3)}, the mission oracle (knowing which missions are open, not whether they convert) "
        f"{r(sc['mission oracle'], 3)}, propensity alone (traits and intent, no missions) "
        f"{r(sc['propensity oracle'], 3)}. LightGBM on f_* reaches {r(lgbm, 3)}, and {r(open_flag, 3)} given the "
        f"open-mission flag. Mission buyers vs non-buyers: LightGBM {r(part['LightGBM f_*'][0], 3)}, "
        f"{', '.join(f'{m.upper()} {r(part[m][0], 3)}' for m in seq)}, mission oracle "
        f"{r(part['mission oracle'][0], 3)}; other buyers vs non-buyers: LightGBM {r(part['LightGBM f_*'][1], 3)}, "
        f"{', '.join(f'{m.upper()} {r(part[m][1], 3)}' for m in seq)}, propensity oracle "
        f"{r(part['propensity oracle'][1], 3)}.",
        f"Observability: trained on the latent flag, LightGBM recognises an open mission from f_* with ROC-AUC "
        f"{r(det['f_*'], 3)}, from f_* plus five hand-made features of the sequences' tail (events after the last "
        f"purchase in about the last day: count, carts, favs, most events on one item, top category share) with "
        f"{r(det['f_* + tail pattern'], 3)}. Purchase ROC-AUC differences (95% paired bootstrap interval over the "
        f"test users): tail features vs LightGBM on f_* "
        f"{ci(diff['LightGBM f_* + tail pattern vs LightGBM f_*'])}; sequence models vs LightGBM on f_* "
        f"{per_model('{m} vs LightGBM f_*')}.",
        f"Ablations of the trained sequence models on the test rows (same intervals): shuffling each sequence's "
        f"event order {per_model('{m} order shuffled vs {m}')}; replacing every event's item bucket by a random one "
        f"(no repeat visits left) {per_model('{m} items scrambled vs {m}')}; giving each user another user's "
        f"sequence (f_* kept) {per_model('{m} sequences swapped vs {m}')}.",
    ]
    seq_used = [m.upper() for m in seq if real(diff[f"{m} sequences swapped vs {m}"])]
    order_used = [m.upper() for m in seq if real(diff[f"{m} order shuffled vs {m}"])]
    items_used = [m.upper() for m in seq if real(diff[f"{m} items scrambled vs {m}"])]
    tail_gain = diff["LightGBM f_* + tail pattern vs LightGBM f_*"]
    verdict = [
        f"headroom from LightGBM ({r(lgbm, 3)}) to the mission oracle ({r(sc['mission oracle'], 3)}) is "
        f"{sc['mission oracle'] - lgbm:.3f} ROC-AUC, of which knowing the open missions closes {open_flag - lgbm:.3f}",
        f"an open mission is recognised from the f_* counts and recencies alone with ROC-AUC {r(det['f_*'], 3)} "
        f"({r(det['f_* + tail pattern'], 3)} adding the tail features)",
        f"the sequence itself matters to {', '.join(seq_used) or 'neither sequence model'}, event order to "
        f"{', '.join(order_used) or 'neither'} and item identity to {', '.join(items_used) or 'neither'}",
    ]
    if real(tail_gain):
        verdict.append(
            f"the sequences carry a little more than the counts (tail features {ci(tail_gain)}), which "
            + (
                "no sequence model extracts"
                if not any(real(diff[f"{m} vs LightGBM f_*"]) and diff[f"{m} vs LightGBM f_*"]["diff"] > 0 for m in seq)
                else "a sequence model extracts"
            )
        )
    else:
        verdict.append(f"the hand-made tail features add nothing measurable to f_* ({ci(tail_gain)})")
    notes.append("Verdict: " + "; ".join(verdict) + ".")
    return notes
