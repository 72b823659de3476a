"""Masked-event pretraining: what is masked, that the objective learns from context, per-event states of both
sequence families, and how a fine-tuning starts from a pretrained sequence encoder."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tasks.config import ConfigError, PipelineConfig
from tasks.models.base import build_model, model_config
from tasks.models.pretraining import (
    MASKED_FIELDS,
    MaskedEventModel,
    choose_masked,
    majority_accuracy,
    mask_events,
    masked_accuracy,
    masked_loss,
)
from tasks.pretrain import holdout_mask
from tests.helpers.config import isolated_config

L, N_CATEGORIES = 10, 20
VOCAB = {
    "seq_event_type": 5,
    "seq_category": N_CATEGORIES + 2,
    "seq_item": 65,
    "seq_gap_cutoff": 33,
    "seq_gap_prev": 33,
    "seq_hour": 25,
}


def _batch(n: int, g: torch.Generator, min_events: int = 2) -> dict[str, torch.Tensor]:
    """Left-padded sequences in which every event of a user has that user's one category, the rest random."""
    lengths = torch.randint(min_events, L + 1, (n,), generator=g)
    mask = torch.arange(L)[None] >= (L - lengths)[:, None]  # [n, L]
    high = {"seq_event_type": 5, "seq_item": 65, "seq_gap_cutoff": 33, "seq_gap_prev": 33, "seq_hour": 25}
    batch = {k: torch.randint(1, h, (n, L), generator=g) * mask for k, h in high.items()}
    batch["seq_category"] = torch.randint(2, N_CATEGORIES + 2, (n, 1), generator=g).expand(n, L) * mask
    batch["seq_mask"] = mask
    batch["tabular"] = torch.zeros(n, 0)
    return batch


def _model(family: str, **sizes):
    cfg = dict(vocab_sizes=VOCAB, n_tabular=0, sequence_length=L, embedding_dim=16, hidden_dim=32, dropout=0.0)
    return build_model(family, model_config(family, **{**cfg, **sizes}))


def test_masking_picks_real_events_only_and_at_least_one_per_user_with_events():
    g = torch.Generator().manual_seed(0)
    batch = _batch(400, g, min_events=1)
    batch["seq_mask"][:5] = False  # users without events
    chosen = choose_masked(batch["seq_mask"], 0.15, g)
    assert not (chosen & ~batch["seq_mask"]).any()
    assert (chosen.sum(dim=1)[5:] >= 1).all() and (chosen.sum(dim=1)[:5] == 0).all()
    share = chosen.sum() / batch["seq_mask"].sum()
    assert 0.15 < share < 0.35  # the rate plus the one forced event of users with few events

    masked = mask_events(batch, chosen)
    for f in MASKED_FIELDS:
        assert (masked[f][chosen] == 0).all() and torch.equal(masked[f][~chosen], batch[f][~chosen])
        assert (batch[f][chosen] > 0).all()  # the input batch is not changed
    for f in ("seq_gap_cutoff", "seq_gap_prev", "seq_hour", "seq_mask"):
        assert masked[f] is batch[f]


def test_the_masked_objective_learns_a_masked_category_from_the_users_other_events():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    train, held = _batch(512, g), _batch(256, g)
    model = MaskedEventModel(_model("bert"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    chosen = choose_masked(held["seq_mask"], 0.15, torch.Generator().manual_seed(5))
    before, _ = masked_accuracy(model, held, chosen)
    for _ in range(150):
        idx = torch.randint(0, 512, (64,), generator=g)
        b = {k: v[idx] for k, v in train.items()}
        c = choose_masked(b["seq_mask"], 0.15, g)
        loss = masked_loss(model(mask_events(b, c), c), b, c)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after, acc = masked_accuracy(model, held, chosen)
    majority = majority_accuracy(train, held, chosen)
    assert after < before
    # The category is the user's own and visible at the other events; type and item are noise.
    assert acc["seq_category"] > 0.4 > 3 * majority["seq_category"]
    assert acc["seq_item"] < 0.05


def test_user_heads_are_frozen_and_a_pooling_layer_the_objective_never_reaches_is_found():
    model = MaskedEventModel(_model("bert", pooling="attention"))
    g = torch.Generator().manual_seed(0)
    batch = _batch(8, g)
    frozen = model.freeze_unreached(batch, choose_masked(batch["seq_mask"], 0.15, g))
    assert frozen == ["encoder.attn_score.weight", "encoder.attn_score.bias"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("encoder.head.", "encoder.category_head.")) for n in trainable)
    assert any(n.startswith("encoder.bert.") for n in trainable) and any(n.startswith("heads.") for n in trainable)


@pytest.mark.parametrize("family", ["lstm", "bert"])
def test_event_states_sit_at_the_batch_positions_whatever_the_padding(family):
    torch.manual_seed(0)
    model = _model(family).eval()
    g = torch.Generator().manual_seed(3)
    batch = _batch(6, g, min_events=3)
    # The same users with their first two real events dropped: two more padding positions on the left.
    shorter = {k: v.clone() for k, v in batch.items()}
    for i in range(6):
        first = int(torch.nonzero(batch["seq_mask"][i])[0])
        for k, v in shorter.items():
            if v.dim() == 2 and v.shape[1] == L:
                v[i, first : first + 2] = 0 if k != "seq_mask" else False
    with torch.no_grad():
        states = model.event_states(batch)  # [6, L, H]
        rep = model.encode_sequence(batch)  # [6, H]
    assert states.shape == (6, L, 32)
    if family == "lstm":
        # A one-layer LSTM's representation is its state after the last event, at the last position.
        torch.testing.assert_close(states[:, -1], rep)
        # Each state reads only its own and earlier events: the last event's state is unchanged by later ones.
        with torch.no_grad():
            cut = model.event_states({k: (v[:, :-1] if v.dim() == 2 else v) for k, v in batch.items()})
        torch.testing.assert_close(cut[:, -1], states[:, -2])
    else:
        with torch.no_grad():
            again = model.event_states(shorter)
        # Two more padding positions on the left (a model with room for them, same weights) change nothing.
        padded = {
            k: (torch.cat([torch.zeros_like(v[:, :2]), v], dim=1) if v.dim() == 2 else v) for k, v in shorter.items()
        }
        big = _model(family, sequence_length=L + 2)
        big.load_state_dict(
            {k: v for k, v in model.state_dict().items() if "position_embeddings" not in k}, strict=False
        )
        big.bert.embeddings.position_embeddings.weight.data[: L + 1] = model.bert.embeddings.position_embeddings.weight
        with torch.no_grad():
            wide = big.eval().event_states(padded)
        real = shorter["seq_mask"]
        torch.testing.assert_close(wide[:, 2:][real], again[real])


def test_a_fine_tuning_starts_from_the_pretrained_sequence_encoder_with_categories_matched_by_id():
    torch.manual_seed(0)
    pretrained = _model("bert", n_tabular=0)
    torch.manual_seed(1)
    fresh = _model("bert", n_tabular=4, n_pair_tabular=2)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    source = {"a": 2, "b": 3, "c": 4}
    target = {"b": 2, "d": 3, "a": 4}
    copied = fresh.init_sequence_encoder(pretrained.sequence_encoder_state(), source, target)

    after = fresh.state_dict()
    assert (
        set(copied) == set(fresh.sequence_encoder_state())
        and "bert.encoder.layer.0.attention.self.query.weight" in copied
    )
    for name in copied:
        if name != "embed.tables.seq_category.weight":
            assert torch.equal(after[name], pretrained.state_dict()[name]), name
    table, src = after["embed.tables.seq_category.weight"], pretrained.state_dict()["embed.tables.seq_category.weight"]
    assert torch.equal(table[4], src[2]) and torch.equal(table[2], src[3])  # a and b, by id
    assert torch.equal(table[1], src[1]) and torch.equal(table[0], src[0])  # OOV and padding rows
    assert torch.equal(table[3], before["embed.tables.seq_category.weight"][3])  # d: never pretrained
    for name in ("head.0.weight", "tabular_mlp.0.weight", "pair_mlp.0.weight", "category_head.0.weight"):
        assert torch.equal(after[name], before[name]), name

    wider = _model("bert", hidden_dim=64)
    kept = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(ValueError, match=r"pretrained cls has shape \(1, 1, 32\), this model \(1, 1, 64\)"):
        wider.init_sequence_encoder(pretrained.sequence_encoder_state(), source, target)
    assert all(torch.equal(v, kept[k]) for k, v in wider.state_dict().items())  # nothing half-copied
    with pytest.raises(ValueError, match="lacks"):
        fresh.init_sequence_encoder(_model("lstm").sequence_encoder_state(), source, target)


def test_a_warm_start_from_a_whole_trained_model_copies_the_heads_too():
    torch.manual_seed(0)
    champion = _model("lstm", n_tabular=4, n_pair_tabular=2)
    torch.manual_seed(1)
    fresh = _model("lstm", n_tabular=4, n_pair_tabular=2)
    source = {"a": 2, "b": 3}
    copied = fresh.init_sequence_encoder(champion.state_dict(), source, {"b": 2, "a": 3})
    assert set(copied) == set(fresh.state_dict())
    for name in ("head.0.weight", "tabular_mlp.0.weight", "pair_mlp.0.weight", "category_head.3.bias"):
        assert torch.equal(fresh.state_dict()[name], champion.state_dict()[name]), name
    table, src = (
        fresh.state_dict()["embed.tables.seq_category.weight"],
        champion.state_dict()["embed.tables.seq_category.weight"],
    )
    assert torch.equal(table[3], src[2]) and torch.equal(table[2], src[3])

    # A champion without the pair features this model reads: refused, nothing copied.
    without_pairs = _model("lstm", n_tabular=4)
    kept = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match="lacks head tensor"):
        fresh.init_sequence_encoder(without_pairs.state_dict(), source, source)
    assert all(torch.equal(v, kept[k]) for k, v in fresh.state_dict().items())


def test_holdout_users_are_stable_and_about_the_configured_share():
    users = pd.Series([f"u{i}" for i in range(20_000)])
    held = holdout_mask(users, 0.1)
    assert 0.09 < held.mean() < 0.11
    assert (holdout_mask(users[::-1].reset_index(drop=True), 0.1) == held[::-1]).all()


def test_init_from_and_pretrain_settings_are_checked(tmp_path):
    isolated_config(tmp_path, training={"init_from": "models:/purchase_intent_encoder@pretrained"})
    isolated_config(tmp_path, training={"init_from": "models:/purchase_intent_encoder/3"})
    with pytest.raises(ConfigError, match="training.init_from.*not models:/<name>/<version>"):
        isolated_config(tmp_path, training={"init_from": "runs:/abc/encoder"})
    with pytest.raises(ConfigError, match="pretrain.model_type.*unknown model family 'gru'"):
        isolated_config(tmp_path, pretrain={"model_type": "gru"})
    with pytest.raises(ConfigError, match="pretrain.mask_rate"):
        isolated_config(tmp_path, pretrain={"mask_rate": 1.0})
    assert PipelineConfig.model_fields["pretrain"]
