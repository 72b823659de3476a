"""bench text_encoder_throughput: texts per second of the pretrained text encoder (tasks.models.text_encoder,
all-MiniLM-L6-v2 by default) on this machine's CPU, by batch size, on distinct search-query-like texts."""

from __future__ import annotations

import argparse

import numpy as np

from bench.harness import r, timed
from tasks.config import DEFAULT_CONFIG, load_config

# Words of shopping queries in REES46's category-code style; queries are 2-6 of them, so their token
# counts (about 4-10 with [CLS]/[SEP]) are those of real search boxes.
_WORDS = (
    "running shoes sneakers women men kids leather waterproof black white red blue cheap best price review vs "
    "smartphone iphone samsung galaxy case charger cable usb wireless earbuds headphones bluetooth laptop "
    "gaming mouse keyboard monitor 4k tv 55 inch fridge washing machine vacuum cleaner coffee maker kettle "
    "sofa chair table lamp bed mattress pillow dress shirt jeans jacket coat bag watch ring perfume cream"
).split()


def queries(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out: set[str] = set()
    while len(out) < n:
        out.add(" ".join(rng.choice(_WORDS, size=int(rng.integers(2, 7)))))
    return sorted(out)


def run(args: argparse.Namespace) -> dict:
    import torch

    from tasks.models.text_encoder import TextEncoder

    cfg = load_config(DEFAULT_CONFIG, use_env=False)
    encoder, load_s = timed(lambda: TextEncoder.from_config(cfg.text))
    n = 512 if args.quick else max(1000, round(20_000 * args.scale))
    texts = queries(n)
    encoder.encode(texts[:64])  # first-call allocations, not timed
    table = []
    for batch_size in (32, 128, 256):
        encoder.batch_size = batch_size
        _, seconds = timed(lambda: encoder.encode(texts))
        table.append({"batch size": batch_size, "texts": n, "seconds": r(seconds), "texts/s": round(n / seconds)})
    best = max(table, key=lambda row: row["texts/s"])
    return {
        "description": "texts per second of the pretrained text encoder on this CPU, by batch size.",
        "table": table,
        "notes": [
            f"Encoder {encoder.identity} ({encoder.identity.dim}-d, max {encoder.identity.max_length} tokens), "
            f"loaded in {load_s:.1f} s; torch {torch.__version__} on CPU with {torch.get_num_threads()} threads; "
            f"{n} distinct query-like texts of 2-6 words; mean pooling and L2 normalisation included.",
            f"Best: {best['texts/s']} texts/s at batch size {best['batch size']}: a day's new texts (queries, "
            "category codes, brands not seen before) are what the nightly run encodes, so this bounds its cost.",
        ],
        "encoder": str(encoder.identity),
        "load_s": load_s,
    }
