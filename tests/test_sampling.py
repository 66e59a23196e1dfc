"""Token sampling: filters keep exactly the intended set; seeded draws are reproducible."""

import jax
import jax.numpy as jnp
import numpy as np

from muse_jax.sampling import filter_logits, sample_token

LOGITS = jnp.log(jnp.array([0.05, 0.4, 0.1, 0.3, 0.15]))


def kept(logits):
    return set(np.flatnonzero(np.asarray(logits) > jnp.finfo(jnp.float32).min / 2).tolist())


def test_top_k_keeps_k_largest():
    assert kept(filter_logits(LOGITS, top_k=2, top_p=1.0)) == {1, 3}


def test_top_p_keeps_smallest_nucleus():
    # sorted: 0.4 (1), 0.3 (3), 0.15 (4), 0.1 (2), 0.05 (0); 0.4+0.3 = 0.7 < 0.75 → also 4
    assert kept(filter_logits(LOGITS, top_k=0, top_p=0.75)) == {1, 3, 4}
    assert kept(filter_logits(LOGITS, top_k=0, top_p=0.3)) == {1}


def test_filters_batched():
    batch = jnp.stack([LOGITS, LOGITS[::-1]])
    out = filter_logits(batch, top_k=0, top_p=0.6)
    assert kept(out[0]) == {1, 3} and kept(out[1]) == {3, 1}


def test_samples_stay_inside_the_set_and_are_seeded():
    keys = jax.random.split(jax.random.key(0), 500)
    draws = jax.vmap(lambda k: sample_token(LOGITS, k, 1.0, 3, 0.9))(keys)
    assert set(np.asarray(draws).tolist()) <= {1, 3, 4}
    again = jax.vmap(lambda k: sample_token(LOGITS, k, 1.0, 3, 0.9))(keys)
    np.testing.assert_array_equal(draws, again)


def test_temperature_zero_is_greedy():
    assert int(sample_token(LOGITS, jax.random.key(0), 0.0, 0, 1.0)) == 1
