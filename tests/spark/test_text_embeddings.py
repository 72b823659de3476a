"""The text-embedding layer: each distinct normalised text of a cleaned day encoded once, by the pretrained
encoder inside Spark's Python workers, keyed by encoder and text; reruns replace exactly their day."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_jobs.text_embeddings import embed_day, encoder_key
from tasks.errors import NoDataError
from tasks.layers import events_partition, text_embeddings_partition, text_embeddings_root, text_encoder_record
from tasks.models.text_encoder import DEFAULT_NAME, EncoderIdentity, TextEncoder
from tasks.schema import EVENT_COLUMNS
from tests.helpers.events import PASTED_QUERIES

pytestmark = pytest.mark.spark

DAY1, DAY2 = dt.date(2026, 1, 2), dt.date(2026, 1, 3)


def _events(cfg, day: dt.date, texts: list[tuple[str | None, str | None, str | None]]) -> None:
    """One events partition whose rows carry (query, category_code, brand)."""
    n = len(texts)
    t0 = dt.datetime.combine(day, dt.time(10), tzinfo=dt.UTC)
    columns = {
        "event_time": pa.array([t0 + dt.timedelta(minutes=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "user_id": pa.array([f"u{i}" for i in range(n)]),
        "item_id": pa.array([f"i{i}" for i in range(n)]),
        "category_id": pa.array(["c1"] * n),
        "event_type": pa.array(["view"] * n),
        "price": pa.array([1.0] * n),
        "session_id": pa.array([f"s{i}" for i in range(n)]),
        "query": pa.array([q for q, _, _ in texts], pa.string()),
        "brand": pa.array([b for _, _, b in texts], pa.string()),
        "category_code": pa.array([c for _, c, _ in texts], pa.string()),
    }
    assert list(columns) == list(EVENT_COLUMNS)
    out = events_partition(cfg, day)
    out.mkdir(parents=True)
    pq.write_table(pa.table(columns), out / "part-00000.parquet")


def _layer(cfg, encoder: str, day: dt.date) -> dict[str, np.ndarray]:
    table = pq.read_table(text_embeddings_partition(cfg, encoder, day))
    return {
        t: np.asarray(v, dtype=np.float32)
        for t, v in zip(table["text"].to_pylist(), table["vector"].to_pylist(), strict=True)
    }


def test_each_text_is_encoded_once_on_its_first_day_and_reruns_replace_their_day(spark, cfg):
    _events(
        cfg,
        DAY1,
        [
            ("Running  Shoes ", "apparel.shoes.sneakers", "Nike"),
            ("running shoes", "apparel.shoes.sneakers", None),
            ("phone case", "electronics.smartphone", "nike"),
            (None, None, None),
            ("   ", None, None),
        ],
    )
    _events(cfg, DAY2, [("phone case", "electronics.smartphone", None), ("usb c cable", None, "Anker")])

    first = embed_day(spark, cfg, DAY1)
    enc = first.encoder
    assert enc.startswith(f"{DEFAULT_NAME}-") and (first.n_texts, first.n_new) == (5, 5)
    day1 = _layer(cfg, enc, DAY1)
    texts = ["running shoes", "apparel.shoes.sneakers", "nike", "phone case", "electronics.smartphone"]
    assert sorted(day1) == sorted(texts)
    # The vectors are the encoder's own, as tasks.models.text_encoder computes them in one process.
    expected = TextEncoder.from_config(cfg.text).encode(texts)
    np.testing.assert_allclose(np.stack([day1[t] for t in texts]), expected, atol=1e-5)

    second = embed_day(spark, cfg, DAY2)
    assert (second.n_texts, second.n_new) == (4, 2)
    assert sorted(_layer(cfg, enc, DAY2)) == ["anker", "usb c cable"]

    again = embed_day(spark, cfg, DAY1)
    assert (again.n_texts, again.n_new) == (5, 5)
    assert sorted(_layer(cfg, enc, DAY1)) == sorted(texts)
    keys = pq.read_table(text_embeddings_root(cfg, enc))["text_key"].to_pylist()
    assert len(keys) == len(set(keys)) == 7

    record = json.loads(text_encoder_record(cfg, enc).read_text())
    assert record["name"] == DEFAULT_NAME and record["dim"] == 384 and enc == encoder_key_of(record)


def encoder_key_of(record: dict) -> str:
    fields = {k: record[k] for k in ("name", "weights_sha256", "dim", "max_length")}
    return encoder_key(EncoderIdentity(**fields))


def test_a_day_without_texts_writes_nothing_and_a_missing_day_is_named(spark, cfg):
    _events(cfg, DAY1, [(None, None, None)])
    report = embed_day(spark, cfg, DAY1)
    assert (report.n_texts, report.n_new) == (0, 0)
    assert not text_embeddings_partition(cfg, report.encoder, DAY1).exists()
    with pytest.raises(NoDataError, match=r"no events landed for 2026-01-03 \(encoding the day's texts\)"):
        embed_day(spark, cfg, DAY2)


# Details users paste into a search box, and the part of each that must never be stored past the raw layer.
def test_personal_data_in_queries_reaches_neither_the_text_layer_nor_the_features(spark, cfg):
    from spark_jobs import features
    from spark_jobs.clean_events import clean_day
    from tasks.layers import features_partition, raw_partition

    header = ",".join(EVENT_COLUMNS)
    lines = [
        f"2026-01-02T10:{i:02d}:00Z,u{i % 5},{100 + i},c{i % 3},view,1.0,s{i},{q},,electronics.smartphone"
        for i, (q, _) in enumerate(PASTED_QUERIES * 5)
    ]
    folder = raw_partition(cfg, "synthetic", DAY1)
    folder.mkdir(parents=True)
    (folder / "events.csv").write_text("\n".join([header, *lines]) + "\n")
    assert clean_day(spark, cfg, DAY1).scrubbed == {"email": 5, "card": 5, "phone": 10}

    report = embed_day(spark, cfg, DAY1)
    features.run(cfg, DAY2, spark=spark)
    stored = {
        "text layer": [str(t) for t in pq.read_table(text_embeddings_partition(cfg, report.encoder, DAY1))["text"]],
        "features": [
            str(t)
            for row in pq.read_table(features_partition(cfg, "user", DAY2), columns=["seq_text"])["seq_text"]
            for t in row.as_py()
        ],
    }
    assert "email me at [email] pls" in stored["text layer"] and "[phone] sofa" in stored["features"]
    for where, texts in stored.items():
        leaked = [t for t in texts for _, secret in PASTED_QUERIES if secret in t]
        assert not leaked, (where, leaked)
