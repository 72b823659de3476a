"""Model shape/mask tests for every architecture, the feature encoder and the shared metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.config import DEFAULT_CONFIG, load_config, with_overrides
from tasks.evaluate import binary_metrics, category_ranking_metrics, evaluate_intents
from tasks.models.base import SEQUENCE_FIELDS, IntentOutput, build_model, family_settings, model_config, model_types
from tasks.models.encoding import OOV, EncoderStats, EncodingError, FeatureEncoder, encode_targets
from tasks.training.build import check_model_settings
from tasks.training.data import candidate_rows
from tasks.training.steps import take
from tests.helpers.trainingset import FEATURE_COLUMNS, PAIR_FEATURE_COLUMNS, write_training_set

L = 12
ARCHS = [
    ("lstm", {}),
    ("lstm", {"field_fusion": "concat", "num_layers": 2}),
    ("bert", {}),
    ("bert", {"pooling": "attention"}),
]


@pytest.fixture(scope="module")
def ts_dir(tmp_path_factory):
    return write_training_set(tmp_path_factory.mktemp("ts") / "ts", n_users=120, seed=3, sequence_length=L)


@pytest.fixture(scope="module")
def train_pdf(ts_dir) -> pd.DataFrame:
    return pd.read_parquet(ts_dir / "train")


@pytest.fixture(scope="module")
def cand_pdf(ts_dir) -> pd.DataFrame:
    return pd.read_parquet(ts_dir / "user_category" / "train")


@pytest.fixture(scope="module")
def encoder(train_pdf, cand_pdf) -> FeatureEncoder:
    enc = FeatureEncoder.fit(train_pdf, list(FEATURE_COLUMNS), sequence_length=L, item_buckets=64)
    return enc.with_pair_stats(FeatureEncoder.partial_tabular_stats(cand_pdf, list(PAIR_FEATURE_COLUMNS)))


def _with_candidates(encoder, users, cand_pdf):
    """User batch plus the users' candidates (and labels), as training builds it."""
    users = users.reset_index(drop=True)
    return {
        **encoder.encode(users),
        **encoder.encode_candidates(candidate_rows(users, cand_pdf), cand_pdf, with_labels=True),
    }


def _model(encoder, model_type, extra, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = model_config(
        model_type,
        vocab_sizes=encoder.vocab_sizes,
        n_tabular=len(encoder.feature_columns),
        sequence_length=L,
        embedding_dim=16,
        hidden_dim=32,
        dropout=0.0,
        n_pair_tabular=len(encoder.pair_feature_columns),
        **extra,
        **kw,
    )
    return build_model(model_type, cfg.to_dict()).eval()


def test_registry_lists_both_architectures():
    assert {"lstm", "bert"} <= set(model_types())
    with pytest.raises(ValueError, match="unknown model type 'gru'"):
        build_model("gru", {})


@pytest.mark.parametrize("model_type,extra", ARCHS)
def test_forward_loss_predict_shapes(encoder, train_pdf, cand_pdf, model_type, extra):
    model = _model(encoder, model_type, extra)
    batch = _with_candidates(encoder, train_pdf.head(17), cand_pdf)
    c = len(batch["cand_row"])
    assert c > 17 and batch["cand_tabular"].shape == (c, len(PAIR_FEATURE_COLUMNS))
    y, w = encode_targets(train_pdf.head(17))
    out = model(batch)
    assert out.intent.shape == (17, 3) and out.intent.dtype == torch.float32
    assert out.category.shape == (c,) and torch.equal(out.category_row, batch["cand_row"])
    loss = model.loss(out, y, w, category_labels=batch["cand_label"])
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.category_head[0].weight.grad.abs().sum() > 0
    p = model.predict(batch)
    assert p.shape == (17, 3) and bool(((p > 0) & (p < 1)).all())
    # Without candidates the same user probabilities and an empty category output.
    torch.testing.assert_close(model.predict(encoder.encode(train_pdf.head(17))), p)
    assert model.predict_output(encoder.encode(train_pdf.head(17))).category.shape == (0,)


@pytest.mark.parametrize("model_type,extra", ARCHS[::2])
def test_category_head_contract_and_oov(encoder, train_pdf, cand_pdf, model_type, extra):
    model = _model(encoder, model_type, extra)
    users = train_pdf.head(10).reset_index(drop=True)
    batch = _with_candidates(encoder, users, cand_pdf)
    out = model.predict_output(batch)
    assert bool(((out.category > 0) & (out.category < 1)).all())
    # A candidate's score depends only on its own user and pair: scoring users one at a time agrees.
    for i in (0, 7):
        one = take(batch, torch.tensor([i]))
        torch.testing.assert_close(model.predict_output(one).category, out.category[batch["cand_row"] == i])
    # A category unseen in training maps to OOV and still gets a finite probability.
    unseen = cand_pdf.head(2).copy()
    unseen["category_id"] = ["never_seen", None]
    rows = candidate_rows(train_pdf, unseen)
    enc = encoder.encode_candidates(rows, unseen)
    assert enc["cand_category"].tolist() == [OOV, OOV]
    p = model.predict_output({**encoder.encode(train_pdf), **enc}).category
    assert p.shape == (2,) and torch.isfinite(p).all()


def test_category_loss_weight_and_normalisation(encoder, train_pdf, cand_pdf):
    users = train_pdf.head(8).reset_index(drop=True)
    batch = _with_candidates(encoder, users, cand_pdf)
    y, w = encode_targets(users)
    off = _model(encoder, "lstm", {}, category_loss_weight=0.0)
    two = _model(encoder, "lstm", {}, category_loss_weight=2.0)
    out = off(batch)
    user_only = off.loss(out, y, w)
    assert off.loss(out, y, w, category_labels=batch["cand_label"]) == user_only
    cand = torch.nn.functional.binary_cross_entropy_with_logits(
        out.category, batch["cand_label"], reduction="none"
    )  # [C]
    expected = user_only + 2.0 * (cand * w[batch["cand_row"]]).sum() / 8
    torch.testing.assert_close(two.loss(out, y, w, category_labels=batch["cand_label"]), expected)


@pytest.mark.parametrize("model_type,extra", ARCHS[::2])
def test_tabular_gradient_equals_full_backward(encoder, train_pdf, model_type, extra):
    """Detaching the sequence encoder gives exactly the gradient of a full backward pass."""
    model = _model(encoder, model_type, extra)
    batch = encoder.encode(train_pdf.head(12))
    tab = batch["tabular"].clone().requires_grad_(True)
    (full,) = torch.autograd.grad(model({**batch, "tabular": tab}).intent[:, 0].sum(), tab)
    torch.testing.assert_close(model.tabular_gradient(batch), full)
    # The same pass also yields the probabilities predict gives.
    probs, _ = model.predict_with_tabular_gradient(batch)
    torch.testing.assert_close(probs.intent, model.predict(batch))


@pytest.mark.parametrize("model_type,extra", ARCHS)
def test_padding_does_not_change_outputs(encoder, train_pdf, model_type, extra):
    model = _model(encoder, model_type, extra)
    rows = train_pdf.head(16)
    batch = encoder.encode(rows)
    base = model.predict(batch)
    # Garbage in padded positions is ignored.
    noisy = {k: v.clone() for k, v in batch.items()}
    pad = ~batch["seq_mask"]
    assert pad.any()
    for key in SEQUENCE_FIELDS:
        noisy[key][pad] = torch.randint(1, 4, (int(pad.sum()),))
    torch.testing.assert_close(model.predict(noisy), base, atol=1e-5, rtol=1e-5)
    # The amount of left padding is irrelevant: the same events with 5 more padded slots.
    wider = {k: torch.cat([torch.zeros_like(v[:, :5]), v], dim=1) if k != "tabular" else v for k, v in batch.items()}
    if model_type == "bert":
        # BERT's position table bounds the length; build one with room for the wider batch, same weights.
        big = _model_with_length(encoder, model_type, extra, L + 5, model)
        torch.testing.assert_close(big.predict(wider), base, atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(model.predict(wider), base, atol=1e-5, rtol=1e-5)


def _model_with_length(encoder, model_type, extra, length, like):
    cfg = model_config(
        model_type,
        vocab_sizes=encoder.vocab_sizes,
        n_tabular=len(encoder.feature_columns),
        sequence_length=length,
        embedding_dim=16,
        hidden_dim=32,
        dropout=0.0,
        n_pair_tabular=len(encoder.pair_feature_columns),
        **extra,
    )
    big = build_model(model_type, cfg).eval()
    state = like.state_dict()
    key = "bert.embeddings.position_embeddings.weight"
    grown = big.state_dict()[key].clone()
    grown[: state[key].shape[0]] = state[key]
    state = {**state, key: grown}
    big.load_state_dict(state)
    return big


@pytest.mark.parametrize("model_type,extra", ARCHS[::2])
def test_users_without_events_get_finite_scores(encoder, train_pdf, model_type, extra):
    model = _model(encoder, model_type, extra)
    rows = train_pdf.head(4).copy()
    for c in (
        "seq_event_type",
        "seq_category",
        "seq_item_bucket",
        "seq_gap_cutoff_bucket",
        "seq_gap_prev_bucket",
        "seq_hour",
    ):
        rows[c] = [[], None, [], None]
    batch = encoder.encode(rows)
    assert not batch["seq_mask"].any()
    assert torch.isfinite(model.predict(batch)).all()


def test_loss_weights_and_positive_weighting(encoder, train_pdf):
    model = _model(encoder, "lstm", {})
    batch = encoder.encode(train_pdf.head(8))
    y, _ = encode_targets(train_pdf.head(8))
    out = model(batch)
    logits = out.intent
    ones = torch.ones(8)
    base = model.loss(out, y, ones)
    torch.testing.assert_close(model.loss(out, y, 2 * ones), 2 * base)
    torch.testing.assert_close(model.loss(out, y, None), base)
    zero_first = ones.clone()
    zero_first[0] = 0
    rest = IntentOutput(logits[1:], out.category, out.category_row)
    torch.testing.assert_close(model.loss(out, y, zero_first), model.loss(rest, y[1:], ones[1:]) * 7 / 8)
    weighted = _model(encoder, "lstm", {}, pos_weight=(5.0, 1.0, 1.0))
    weighted.load_state_dict(model.state_dict())
    assert y[:, 0].any()
    assert weighted.loss(out, y, ones) > base


def test_config_validation():
    sizes = {k: 5 for k in SEQUENCE_FIELDS}
    with pytest.raises(ValueError, match="not divisible"):
        model_config("bert", vocab_sizes=sizes, n_tabular=2, sequence_length=4, hidden_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="pos_weight"):
        model_config("lstm", vocab_sizes=sizes, n_tabular=2, sequence_length=4, pos_weight=(1.0,))
    with pytest.raises(ValueError, match="unknown LSTMConfig keys"):
        model_config("lstm", vocab_sizes=sizes, n_tabular=2, sequence_length=4, pooling="cls")


@pytest.mark.parametrize("family", model_types())
def test_shipped_family_sections_validate(family):
    # The config cannot check a family's section without torch; training does, and so does this for every family.
    cfg = load_config(DEFAULT_CONFIG, use_env=False)
    assert family in cfg.models, f"conf/pipeline.yaml has no models.{family} section"
    check_model_settings(cfg, family, L)
    assert family_settings(family, cfg.models[family]) == cfg.models[family]


def test_family_section_errors_name_the_key():
    cfg = load_config(DEFAULT_CONFIG, use_env=False)
    bad = {
        "heads": r"models\.bert: unknown key\(s\) \['heads'\]; BertIntentConfig takes \['num_layers'",
        "hidden_dim": r"models\.bert: unknown key\(s\) \['hidden_dim'\]",
    }
    for key, message in bad.items():
        with pytest.raises(ValueError, match=message):
            check_model_settings(with_overrides(cfg, {"models": {"bert": {key: 2}}}), "bert", L)
    with pytest.raises(ValueError, match=r"models\.lstm\.num_layers: Input should be a valid integer"):
        check_model_settings(with_overrides(cfg, {"models": {"lstm": {"num_layers": "2"}}}), "lstm", L)
    with pytest.raises(ValueError, match="pooling must be 'cls' or 'attention'"):
        check_model_settings(with_overrides(cfg, {"models": {"bert": {"pooling": "max"}}}), "bert", L)
    with pytest.raises(ValueError, match="not divisible by num_heads 3"):
        check_model_settings(with_overrides(cfg, {"models": {"bert": {"num_heads": 3}}}), "bert", L)


# ---- encoder ---------------------------------------------------------------------------------


def test_encoder_round_trip(encoder, train_pdf):
    again = FeatureEncoder.from_json(encoder.to_json())
    assert again == encoder
    a, b = encoder.encode(train_pdf.head(30)), again.encode(train_pdf.head(30))
    for k in a:
        assert torch.equal(a[k], b[k])
    with pytest.raises(EncodingError, match="not a FeatureEncoder"):
        FeatureEncoder.from_json('{"nope": 1}')


def test_encoder_layout_oov_truncation_and_imputation(encoder):
    row = {
        "user_id": ["a", "b"],
        **{c: [1.0, np.nan] for c in FEATURE_COLUMNS},
        "seq_event_type": [np.array([1, 2, 3], dtype=np.int32), list(range(1, 5)) * 4],  # 3 and 16 events
        "seq_category": [["cat_1", "never_seen", None], ["cat_2"] * 16],
        "seq_item_bucket": [[1, 2, 3], [5] * 16],
        "seq_gap_cutoff_bucket": [[3, 2, 99], [0] * 16],
        "seq_gap_prev_bucket": [[0, 1, 2], [0] * 16],
        "seq_hour": [[0, 12, 23], [5] * 16],
    }
    batch = encoder.encode(pd.DataFrame(row))
    assert batch["seq_event_type"].shape == (2, L)
    # Left padding: the 3 events sit at the right end, oldest first.
    assert batch["seq_event_type"][0].tolist() == [0] * (L - 3) + [1, 2, 3]
    assert batch["seq_mask"][0].tolist() == [False] * (L - 3) + [True] * 3
    cats = batch["seq_category"][0, -3:].tolist()
    assert cats[0] == encoder.category_index["cat_1"] and cats[1] == OOV and cats[2] == OOV
    assert batch["seq_hour"][0, -3:].tolist() == [1, 13, 24]
    assert batch["seq_gap_cutoff"][0, -1].item() == encoder.gap_buckets  # capped tail bucket
    # Longer than L: the most recent L events are kept.
    assert batch["seq_mask"][1].all()
    assert batch["seq_event_type"][1].tolist() == (list(range(1, 5)) * 4)[-L:]
    # A missing f_* value is imputed with the train statistic, i.e. standardised to the column mean.
    assert np.isfinite(batch["tabular"].numpy()).all()
    one_row = {c: [v] for c, v in zip(FEATURE_COLUMNS, encoder.impute_values, strict=True)}
    imputed = encoder.encode_tabular(pd.DataFrame(one_row))
    np.testing.assert_allclose(batch["tabular"][1].numpy(), imputed[0], atol=1e-6)


def test_encoder_rejects_contract_violations(encoder, train_pdf):
    rows = train_pdf.head(3).copy()
    with pytest.raises(EncodingError, match="feature column.*f_avg_price"):
        encoder.encode(rows.drop(columns=["f_avg_price"]))
    with pytest.raises(EncodingError, match="sequence column.*seq_hour"):
        encoder.encode(rows.drop(columns=["seq_hour"]))
    bad = rows.copy()
    bad["seq_event_type"] = [[7] * len(v) for v in rows["seq_item_bucket"]]
    with pytest.raises(EncodingError, match="seq_event_type.*outside 1..4"):
        encoder.encode(bad)
    bad = rows.copy()
    bad["seq_hour"] = [list(v) + [1] for v in rows["seq_hour"]]
    with pytest.raises(EncodingError, match="seq_hour.*length differs"):
        encoder.encode(bad)
    bad = rows.copy()
    bad["f_avg_price"] = ["x", "y", "z"]
    with pytest.raises(EncodingError, match="f_avg_price.*not numeric"):
        encoder.encode(bad)
    bad = rows.copy()
    bad.loc[bad.index[0], "label_cart"] = None
    with pytest.raises(EncodingError, match="null labels.*label_cart"):
        encode_targets(bad)


def test_partial_stats_merge_equals_whole_fit(train_pdf):
    kw = dict(sequence_length=L, item_buckets=64, category_min_count=2)
    whole = FeatureEncoder.fit(train_pdf, list(FEATURE_COLUMNS), **kw)
    stats = EncoderStats(feature_columns=list(FEATURE_COLUMNS))
    for part in (train_pdf.iloc[:100], train_pdf.iloc[100:250], train_pdf.iloc[250:]):
        stats = stats.merge(FeatureEncoder.partial_stats(part, list(FEATURE_COLUMNS)))
    merged = FeatureEncoder.from_stats(stats, **kw)
    assert merged.category_index == whole.category_index
    np.testing.assert_allclose(merged.means, whole.means, rtol=1e-9)
    np.testing.assert_allclose(merged.stds, whole.stds, rtol=1e-9)
    assert merged.log_transform == whole.log_transform
    with pytest.raises(EncodingError, match="empty train split"):
        FeatureEncoder.from_stats(EncoderStats(feature_columns=["f_x"]), **kw)


# ---- metrics ---------------------------------------------------------------------------------


def test_metrics_values_and_errors():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0, 0])
    perfect = binary_metrics(y, y * 0.9 + 0.05, top_k_fraction=0.3)
    assert perfect["roc_auc"] == 1.0 and perfect["pr_auc"] == 1.0 and perfect["recall_top_30pct"] == 1.0
    assert perfect["f1"] == 1.0 and perfect["brier"] == pytest.approx(0.0025)
    inverted = binary_metrics(y, 1 - y * 0.9 - 0.05)
    assert inverted["roc_auc"] == 0.0
    assert np.isnan(binary_metrics(np.zeros(4), np.full(4, 0.2))["roc_auc"])
    m = evaluate_intents(np.stack([y, y, 1 - y], 1), np.stack([y * 0.8 + 0.1] * 3, 1))
    assert m["purchase_roc_auc"] == 1.0 and m["fav_roc_auc"] == 0.0
    with pytest.raises(ValueError, match="lie in"):
        binary_metrics(y, np.full(10, 1.5))
    with pytest.raises(ValueError, match="expected"):
        evaluate_intents(y[:, None], y[:, None])


def test_category_ranking_metrics_hand_computed():
    # User a: positive ranked 2nd of 3. User b: positives ranked 1st and 3rd of 3. User c: no positive (skipped).
    groups = np.array(["a", "a", "a", "b", "b", "b", "c", "c"])
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.5, 0.1, 0.8, 0.7, 0.2, 0.9, 0.1])
    m1 = category_ranking_metrics(groups, labels, scores, k=1)
    assert m1["category_users"] == 2
    assert m1["category_hit_rate_at_1"] == 0.5  # only b has a positive on top
    assert m1["category_ndcg_at_1"] == pytest.approx((0.0 + 1.0) / 2)
    m2 = category_ranking_metrics(groups, labels, scores, k=2)
    assert m2["category_hit_rate_at_2"] == 1.0
    ndcg_a = (1 / np.log2(3)) / 1.0
    ndcg_b = 1.0 / (1.0 + 1 / np.log2(3))
    assert m2["category_ndcg_at_2"] == pytest.approx((ndcg_a + ndcg_b) / 2)
    m3 = category_ranking_metrics(groups, labels, scores, k=3)
    assert m3["category_ndcg_at_3"] == pytest.approx(((1 / np.log2(3)) + (1 + 0.5) / (1 + 1 / np.log2(3))) / 2)
    # Negative case: positives always ranked last -> no hit at k=1, NDCG below 1; input order is irrelevant.
    worst = category_ranking_metrics(groups, labels, 1.0 - labels, k=1)
    assert worst["category_hit_rate_at_1"] == 0.0 and worst["category_ndcg_at_1"] == 0.0
    perm = np.random.default_rng(0).permutation(len(groups))
    assert category_ranking_metrics(groups[perm], labels[perm], scores[perm], k=2) == m2
    none = category_ranking_metrics(np.array(["c"]), np.array([0]), np.array([0.3]), k=5)
    assert none["category_users"] == 0 and np.isnan(none["category_hit_rate_at_5"])
    with pytest.raises(ValueError, match="0/1"):
        category_ranking_metrics(groups, labels * 2, scores, k=1)
