"""Text in the sequence families: how texts become table rows, the frozen table of pretrained vectors beside the
field embeddings, the candidate category's text, and a category unseen in training ranked from its text alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.config import DEFAULT_CONFIG, load_config
from tasks.models.base import build_model, model_config
from tasks.models.encoding import OOV, EncodingError, FeatureEncoder
from tasks.models.pretraining import mask_events
from tasks.models.pyfunc import explode_candidates
from tasks.models.text_encoder import TextEncoder

L = 4


def _users(categories: list[list[str]], texts: list[list[str]]) -> pd.DataFrame:
    n = [len(c) for c in categories]
    return pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(len(categories))],
            "f_x": np.linspace(0.0, 1.0, len(categories)),
            "seq_event_type": [[1] * k for k in n],
            "seq_category": categories,
            "seq_item_bucket": [[1] * k for k in n],
            "seq_gap_cutoff_bucket": [[3] * k for k in n],
            "seq_gap_prev_bucket": [[2] * k for k in n],
            "seq_hour": [[12] * k for k in n],
            "seq_text": texts,
        }
    )


def _encoder(users: pd.DataFrame, texts: list[str], dim: int) -> FeatureEncoder:
    enc = FeatureEncoder.fit(users, ["f_x"], sequence_length=L, item_buckets=4)
    cand = pd.DataFrame({"category_id": ["a"], "f_uc": [1.0]})
    return enc.with_pair_stats(FeatureEncoder.partial_tabular_stats(cand, ["f_uc"])).with_texts(
        texts, dim, "test-encoder", "2026-01-01"
    )


def _model(enc: FeatureEncoder, family: str = "lstm", **sizes) -> torch.nn.Module:
    cfg = dict(
        vocab_sizes=enc.vocab_sizes,
        n_tabular=1,
        sequence_length=L,
        embedding_dim=16,
        hidden_dim=32,
        dropout=0.0,
        n_pair_tabular=1,
    )
    return build_model(family, model_config(family, **{**cfg, **enc.text_sizes, **sizes}))


def test_texts_become_table_rows_aligned_with_the_events():
    users = _users([["a", "b"], ["b"], []], [["electronics.smartphone", ""], ["cheap sofa"], []])
    enc = _encoder(users, ["cheap sofa", "electronics.smartphone"], 8)
    assert enc.text_sizes == {"text_vocab": 4, "text_dim": 8}
    batch = enc.encode(users)
    # Left-padded like every sequence field: "" is no text (0), a text outside the table is OOV.
    assert batch["seq_text"].tolist() == [[0, 0, 3, 0], [0, 0, 0, 2], [0, 0, 0, 0]]
    assert enc.text_indices(["never seen", None, "", "cheap sofa"]).tolist() == [OOV, 0, 0, 2]
    cand = pd.DataFrame({"category_id": ["a", "b"], "f_uc": [1.0, 2.0], "category_text": ["cheap sofa", "new"]})
    assert enc.encode_candidates(np.array([0, 1]), cand)["cand_text"].tolist() == [2, OOV]
    # The sequence text must be as long as the other sequence columns.
    broken = users.assign(seq_text=[["x"], ["cheap sofa"], []])
    with pytest.raises(EncodingError, match="seq_text"):
        enc.encode(broken)
    with pytest.raises(EncodingError, match="candidate text"):
        enc.encode_candidates(np.array([0]), cand[["category_id", "f_uc"]].head(1))
    # An encoder that reads no text ignores the column.
    assert "seq_text" not in FeatureEncoder.fit(users, ["f_x"], sequence_length=L, item_buckets=4).encode(users)
    restored = FeatureEncoder.from_json(enc.to_json())
    assert restored.text_index == enc.text_index and restored.text_dim == 8


@pytest.mark.parametrize("family", ["lstm", "bert"])
def test_the_pretrained_vectors_are_a_frozen_table_whose_projection_learns(family):
    users = _users([["a", "b", "a"], ["b"]], [["t0", "", "t1"], ["t1"]])
    enc = _encoder(users, ["t0", "t1"], 8)
    torch.manual_seed(0)
    model = _model(enc, family)
    with pytest.raises(ValueError, match=r"shape \(3, 8\)"):
        model.embed.set_text_vectors(torch.ones(3, 8))
    vectors = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    model.embed.set_text_vectors(vectors)
    table = model.embed.text.weight
    assert not table.requires_grad and table[:2].abs().sum() == 0 and torch.equal(table[2:], vectors)
    # The table is saved with the weights.
    assert torch.equal(model.state_dict()["embed.text.weight"], table)

    batch = {**enc.encode(users), "cand_row": torch.tensor([0, 1]), "cand_category": torch.tensor([2, 3])}
    batch["cand_tabular"], batch["cand_text"] = torch.zeros(2, 1), torch.tensor([2, 3])
    out = model(batch)
    loss = model.loss(out, torch.ones(2, 3), category_labels=torch.tensor([1.0, 0.0]))
    loss.backward()
    assert table.grad is None and model.embed.text_project.weight.grad.abs().sum() > 0
    # The model reads the texts: other vectors, other outputs.
    model.eval()
    before = model(batch)
    model.embed.set_text_vectors(-vectors)
    after = model(batch)
    assert not torch.allclose(before.intent, after.intent) and not torch.allclose(before.category, after.category)


def test_a_masked_event_hides_its_text_too():
    users = _users([["a", "b"]], [["t0", "t1"]])
    batch = _encoder(users, ["t0", "t1"], 4).encode(users)
    chosen = torch.zeros(1, L, dtype=torch.bool)
    chosen[0, 3] = True
    masked = mask_events(batch, chosen)
    assert masked["seq_text"].tolist() == [[0, 0, 2, 0]] and masked["seq_category"][0, 3] == 0


def test_scoring_hands_the_candidate_texts_to_the_model():
    users = pd.DataFrame(
        {
            "cand_category_id": [["a", "b"], None],
            "cand_f_uc": [[1.0, 2.0], None],
            "cand_category_text": [["kids.toys", "sport.bicycle"], None],
        }
    )
    rows, cand = explode_candidates(users, ["f_uc"])
    assert rows.tolist() == [0, 0] and cand["category_text"].tolist() == ["kids.toys", "sport.bicycle"]
    with pytest.raises(EncodingError, match="cand_category_text length differs"):
        explode_candidates(users.assign(cand_category_text=[["kids.toys"], None]), ["f_uc"])


SEEN = {
    "electronics": ["electronics.smartphone", "electronics.audio.headphone", "electronics.video.tv"],
    "furniture": ["furniture.living_room.sofa", "furniture.bedroom.bed", "furniture.kitchen.table"],
}
UNSEEN = {"e_new": "electronics.tablet", "f_new": "furniture.living_room.armchair"}


@pytest.fixture(scope="module")
def code_vectors() -> dict[str, np.ndarray]:
    encoder = TextEncoder.from_config(load_config(DEFAULT_CONFIG, use_env=False).text)
    codes = [c for group in SEEN.values() for c in group] + list(UNSEEN.values())
    return dict(zip(codes, encoder.encode(codes), strict=True))


def _train_category_head(
    code_vectors: dict[str, np.ndarray], with_text: bool
) -> tuple[torch.nn.Module, FeatureEncoder]:
    """Users who buy in electronics, never in furniture, trained on the six seen categories only."""
    rng = np.random.default_rng(0)
    ids = {code: f"c{i}" for i, code in enumerate(c for group in SEEN.values() for c in group)}
    n = 256
    cats = [[ids[SEEN[g][rng.integers(3)]] for g in rng.choice(list(SEEN), size=2)] for _ in range(n)]
    code_of = {v: k for k, v in ids.items()}
    users = _users(cats, [[code_of[c] for c in row] for row in cats])
    texts = sorted(code_vectors)
    enc = FeatureEncoder.fit(users, ["f_x"], sequence_length=L, item_buckets=4)
    cand_ids = [ids[c] for group in SEEN.values() for c in group]
    cand = pd.DataFrame(
        {
            "category_id": np.tile(cand_ids, n),
            "f_uc": np.zeros(6 * n),
            "category_text": np.tile([code_of[c] for c in cand_ids], n),
            "label": np.tile([1.0] * 3 + [0.0] * 3, n),
        }
    )
    enc = enc.with_pair_stats(FeatureEncoder.partial_tabular_stats(cand, ["f_uc"]))
    if with_text:
        enc = enc.with_texts(texts, 384, "all-MiniLM-L6-v2", "2026-01-01")
    torch.manual_seed(0)
    model = _model(enc, "lstm", category_loss_weight=1.0)
    if with_text:
        model.embed.set_text_vectors(torch.from_numpy(np.stack([code_vectors[t] for t in texts])))
    batch = {**enc.encode(users), **enc.encode_candidates(np.repeat(np.arange(n), 6), cand)}
    labels = torch.from_numpy(cand["label"].to_numpy(dtype=np.float32))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        model.loss(model(batch), torch.zeros(n, 3), category_labels=labels).backward()
        opt.step()
    return model.eval(), enc


@pytest.mark.parametrize("with_text", [True, False], ids=["text", "no-text"])
def test_a_category_unseen_in_training_is_ranked_by_its_text(code_vectors, with_text):
    model, enc = _train_category_head(code_vectors, with_text)
    assert set(UNSEEN).isdisjoint(enc.category_index)
    users = _users([["c0"]] * 8, [["electronics.smartphone"]] * 8)
    cand = pd.DataFrame(
        {"category_id": list(UNSEEN) * 8, "f_uc": np.zeros(16), "category_text": list(UNSEEN.values()) * 8}
    )
    batch = {**enc.encode(users), **enc.encode_candidates(np.repeat(np.arange(8), 2), cand)}
    with torch.no_grad():
        logits = model(batch).category.reshape(8, 2)  # [users, (e_new, f_new)]
    # Both are the OOV row of the category table; only their code text tells them apart.
    assert (batch["cand_category"] == OOV).all()
    if with_text:
        assert (logits[:, 0] > logits[:, 1] + 1.0).all(), logits
    else:
        torch.testing.assert_close(logits[:, 0], logits[:, 1])


def test_a_model_without_text_refuses_vectors():
    users = _users([["a"]], [["t0"]])
    model = _model(FeatureEncoder.fit(users, ["f_x"], sequence_length=L, item_buckets=4))
    assert model.embed.text is None
    with pytest.raises(ValueError, match="reads no text"):
        model.embed.set_text_vectors(torch.ones(1, 4))
    with pytest.raises(ValueError, match="text_vocab and text_dim"):
        _model(FeatureEncoder.fit(users, ["f_x"], sequence_length=L, item_buckets=4), text_vocab=3)


def test_scoring_hands_a_model_the_vectors_of_texts_first_seen_after_its_training():
    from tasks.models.base import TorchPredictor
    from tasks.models.calibration import CalibratedPredictor, Calibration, Calibrator

    users = _users([["a", "b"], ["b"]], [["t0", "t1"], ["t1"]])
    enc = _encoder(users, ["t0", "t1"], 8)
    torch.manual_seed(0)
    model = _model(enc).eval()
    model.embed.set_text_vectors(torch.nn.functional.normalize(torch.randn(2, 8), dim=-1))
    predictor = CalibratedPredictor(TorchPredictor(model, enc, "lstm"), Calibration([Calibrator()] * 3, Calibrator()))
    assert (predictor.text_encoder, predictor.text_through) == ("test-encoder", "2026-01-01")
    late = users.assign(seq_text=[["t0", "new query"], ["t1"]])
    cand = pd.DataFrame({"category_id": ["a", "b"], "f_uc": [1.0, 1.0], "category_text": ["new code", "t1"]})
    rows = np.array([0, 1])
    before = predictor.predict_chunk(late, rows, cand, 0)
    # Unknown texts count as no text until their vectors are handed over.
    assert enc.text_indices(["new query", "new code"]).tolist() == [OOV, OOV]
    vectors = np.full((3, 8), 1 / np.sqrt(8), dtype=np.float32)
    assert predictor.add_texts(["new query", "t0", "new code"], vectors) == 2
    assert predictor.add_texts(["new query"], vectors[:1]) == 0
    inner = predictor.inner
    assert inner.encoder.text_index["new query"] == 4 and inner.encoder.text_index["new code"] == 5
    assert torch.equal(inner.model.embed.text.weight[4:], torch.from_numpy(vectors[[0, 2]]))
    assert not inner.model.embed.text.weight.requires_grad
    after = predictor.predict_chunk(late, rows, cand, 0)
    assert not np.allclose(before.intent[0], after.intent[0]) and not np.isclose(before.category[0], after.category[0])
    np.testing.assert_allclose(before.intent[1], after.intent[1], rtol=1e-6)  # its texts were known already
    with pytest.raises(ValueError, match=r"need vectors \[1, 8\]"):
        predictor.add_texts(["x"], np.ones((1, 4), dtype=np.float32))


def test_scoring_reads_the_layer_partitions_encoded_after_the_models_training_and_before_its_day(tmp_path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from spark_jobs.score import new_text_vectors
    from tasks.layers import text_embeddings_partition
    from tests.helpers.config import isolated_config

    cfg = isolated_config(tmp_path / "var")
    for day in range(1, 5):
        folder = text_embeddings_partition(cfg, "enc-1", dt.date(2026, 1, day))
        folder.mkdir(parents=True)
        vectors = pa.array([[float(day)] * 3], type=pa.list_(pa.float32()))
        pq.write_table(pa.table({"text": [f"first seen {day}"], "vector": vectors}), folder / "part-0.parquet")
    meta = {"text_encoder": "enc-1", "text_through": "2026-01-01"}
    texts, vectors = new_text_vectors(cfg, meta, dt.date(2026, 1, 4))
    assert texts == ["first seen 2", "first seen 3"]
    np.testing.assert_array_equal(vectors, np.array([[2.0] * 3, [3.0] * 3], dtype=np.float32))
    none_yet, empty = new_text_vectors(cfg, meta, dt.date(2026, 1, 2))
    assert none_yet == [] and empty.shape == (0, 0)
    assert new_text_vectors(cfg, {}, dt.date(2026, 1, 4)) is None  # a model that reads no text
