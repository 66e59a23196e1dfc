"""The language models: shapes, finiteness and causality (bk and transformer)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from muse_jax.model.lm import LanguageModel

VOCAB = 97


def tiny_model(tiny_config, kind: str) -> LanguageModel:
    tiny_config.model.kind = kind
    return LanguageModel(tiny_config.model, VOCAB, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("kind", ["bk", "transformer"])
def test_logits_shape_and_finite(tiny_config, kind):
    model = tiny_model(tiny_config, kind)
    tokens = jax.random.randint(jax.random.key(0), (2, 24), 0, VOCAB)
    logits = model(tokens)
    assert logits.shape == (2, 24, VOCAB) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("kind", ["bk", "transformer"])
def test_causality(tiny_config, kind):
    """Changing tokens after position t never changes the logits at positions ≤ t."""
    model = tiny_model(tiny_config, kind)
    n, t = 40, 17
    tokens = jax.random.randint(jax.random.key(1), (2, n), 0, VOCAB)
    changed = tokens.at[:, t + 1 :].set(jax.random.randint(jax.random.key(2), (2, n - t - 1), 0, VOCAB))
    a, b = model(tokens), model(changed)
    np.testing.assert_array_equal(np.asarray(a[:, : t + 1]), np.asarray(b[:, : t + 1]))
    assert not np.allclose(np.asarray(a[:, t + 1 :]), np.asarray(b[:, t + 1 :])), "the test could not fail"


def test_layers_are_stacked(tiny_config):
    """Block parameters carry a leading layer axis (scanned, so compile time is depth-independent)."""
    model = tiny_model(tiny_config, "bk")
    kernel = nnx.to_pure_dict(nnx.split(model)[1])["blocks"]["ffn"]["up"]["kernel"]
    assert kernel.shape[0] == tiny_config.model.n_layers
