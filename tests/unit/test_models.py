"""Model shape/mask tests for every architecture, the feature encoder and the shared metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.evaluate import binary_metrics, evaluate_intents
from tasks.models.base import SEQUENCE_FIELDS, build_model, model_config, model_types
from tasks.models.encoding import OOV, EncoderStats, EncodingError, FeatureEncoder, encode_targets
from tests.helpers.trainingset import FEATURE_COLUMNS, write_training_set

L = 12
ARCHS = [("lstm", {}), ("lstm", {"field_fusion": "concat", "num_layers": 2}), ("bert", {}), ("bert", {"pooling": "attention"})]


@pytest.fixture(scope="module")
def train_pdf(tmp_path_factory) -> pd.DataFrame:
    d = write_training_set(tmp_path_factory.mktemp("ts") / "ts", n_users=120, seed=3, sequence_length=L)
    return pd.read_parquet(d / "train")


@pytest.fixture(scope="module")
def encoder(train_pdf) -> FeatureEncoder:
    return FeatureEncoder.fit(train_pdf, list(FEATURE_COLUMNS), sequence_length=L, item_buckets=64)


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
        **extra,
        **kw,
    )
    return build_model(model_type, cfg.to_dict()).eval()


def test_registry_lists_both_architectures():
    assert {"lstm", "bert"} <= set(model_types())
    with pytest.raises(ValueError, match="unknown model type 'gru'"):
        build_model("gru", {})


@pytest.mark.parametrize("model_type,extra", ARCHS)
def test_forward_loss_predict_shapes(encoder, train_pdf, model_type, extra):
    model = _model(encoder, model_type, extra)
    batch = encoder.encode(train_pdf.head(17))
    y, w = encode_targets(train_pdf.head(17))
    logits = model(batch)
    assert logits.shape == (17, 3) and logits.dtype == torch.float32
    loss = model.loss(logits, y, w)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    p = model.predict(batch)
    assert p.shape == (17, 3) and bool(((p > 0) & (p < 1)).all())


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
    for c in ("seq_event_type", "seq_category", "seq_item_bucket", "seq_gap_cutoff_bucket", "seq_gap_prev_bucket", "seq_hour"):
        rows[c] = [[], None, [], None]
    batch = encoder.encode(rows)
    assert not batch["seq_mask"].any()
    assert torch.isfinite(model.predict(batch)).all()


def test_loss_weights_and_positive_weighting(encoder, train_pdf):
    model = _model(encoder, "lstm", {})
    batch = encoder.encode(train_pdf.head(8))
    y, _ = encode_targets(train_pdf.head(8))
    logits = model(batch)
    ones = torch.ones(8)
    base = model.loss(logits, y, ones)
    torch.testing.assert_close(model.loss(logits, y, 2 * ones), 2 * base)
    torch.testing.assert_close(model.loss(logits, y, None), base)
    zero_first = ones.clone()
    zero_first[0] = 0
    torch.testing.assert_close(
        model.loss(logits, y, zero_first), model.loss(logits[1:], y[1:], ones[1:]) * 7 / 8
    )
    weighted = _model(encoder, "lstm", {}, pos_weight=(5.0, 1.0, 1.0))
    weighted.load_state_dict(model.state_dict())
    assert y[:, 0].any()
    assert weighted.loss(logits, y, ones) > base


def test_config_validation():
    sizes = {k: 5 for k in SEQUENCE_FIELDS}
    with pytest.raises(ValueError, match="not divisible"):
        model_config("bert", vocab_sizes=sizes, n_tabular=2, sequence_length=4, hidden_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="pos_weight"):
        model_config("lstm", vocab_sizes=sizes, n_tabular=2, sequence_length=4, pos_weight=(1.0,))
    with pytest.raises(ValueError, match="unknown LSTMConfig keys"):
        model_config("lstm", vocab_sizes=sizes, n_tabular=2, sequence_length=4, pooling="cls")


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
    imputed = encoder.encode_tabular(pd.DataFrame({c: [v] for c, v in zip(FEATURE_COLUMNS, encoder.impute_values)}))
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
