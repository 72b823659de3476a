"""The pretrained text encoder: all-MiniLM-L6-v2 from its package, offline; vectors, identity, errors."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.config import DEFAULT_CONFIG, load_config
from tasks.errors import ConfigError
from tasks.models.text_encoder import DEFAULT_NAME, TextEncoder, main, packaged_encoder_dir


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder.from_config(load_config(DEFAULT_CONFIG, use_env=False).text)


def test_vectors_are_unit_length_and_independent_of_the_batch(encoder):
    texts = ["running shoes", "iphone 15 pro max case 256gb", "", "electronics.smartphone", "casque bluetooth"]
    vectors = encoder.encode(texts)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Padding must not leak into the mean: alone or beside longer texts, a text gets the same vector.
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(alone, vectors, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_pretrained_vectors_know_what_products_are(encoder):
    shoes, sneakers, phone_case, smartphone, cable = encoder.encode(
        ["running shoes", "sneakers for jogging", "phone case", "electronics.smartphone", "usb c charging cable"]
    )
    # A randomly initialised encoder ranks these by chance; the pretrained one by meaning.
    assert shoes @ sneakers > max(shoes @ phone_case, shoes @ smartphone, shoes @ cable) + 0.2
    assert phone_case @ smartphone > shoes @ smartphone


def test_identity_names_the_checkpoint_and_its_weights(encoder):
    ident = encoder.identity
    assert (ident.name, ident.dim, ident.max_length) == (DEFAULT_NAME, 384, 64)
    assert len(ident.weights_sha256) == 64 and str(ident) == f"{DEFAULT_NAME}@{ident.weights_sha256[:12]}"
    # A team's own checkpoint directory is named by its folder and hashed the same way.
    own = TextEncoder(packaged_encoder_dir(), max_length=16)
    assert own.identity.name == "model" and own.identity.weights_sha256 == ident.weights_sha256


def test_a_directory_that_is_not_a_checkpoint_is_named(tmp_path):
    with pytest.raises(ConfigError, match=rf"{tmp_path} is not a transformers checkpoint: it needs config.json"):
        TextEncoder(tmp_path)
    cfg = load_config(DEFAULT_CONFIG, overrides={"text": {"encoder_dir": str(tmp_path)}}, use_env=False)
    with pytest.raises(ConfigError, match="is not a transformers checkpoint"):
        TextEncoder.from_config(cfg.text)


def test_cli_prints_identity_and_similarities(capsys):
    assert main(["running shoes", "sneakers"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"encoder: {DEFAULT_NAME}@") and "384-d" in out[0]
    assert out[1].startswith("running shoes  +1.000  +0.") and len(out) == 3
