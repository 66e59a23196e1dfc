"""Tensor-train embedding: lookups and tied scores equal the dense reconstructed table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_jax.model.tensor_train import (
    balanced_factors, tt_init_cores, tt_lookup, tt_reconstruct, tt_score_path, tt_scores, vocab_factors,
)


def test_factorisations():
    assert balanced_factors(128) == (8, 4, 4) and balanced_factors(32) == (4, 4, 2)
    assert balanced_factors(7) == (7, 1, 1)
    assert vocab_factors(32768) == (32, 32, 32) and vocab_factors(4096) == (16, 16, 16)
    assert vocab_factors(1536) == (12, 12, 12)


@pytest.fixture(scope="module")
def cores():
    return tt_init_cores(jax.random.key(0), vocab_factors(100), balanced_factors(24), rank=3)


def dense_table(cores) -> np.ndarray:
    """E[t] built entry by entry from the TT definition (slow, obviously right)."""
    g1, g2, g3 = (np.asarray(g, np.float64) for g in cores)
    v2, v3 = g2.shape[0], g3.shape[0]
    rows = []
    for t in range(g1.shape[0] * v2 * v3):
        i1, i2, i3 = t // (v2 * v3), (t // v3) % v2, t % v3
        rows.append(np.einsum("ar,rbs,sc->abc", g1[i1], g2[i2], g3[i3]).ravel())
    return np.stack(rows)


def test_lookup_and_reconstruction_equal_the_dense_table(cores):
    table = dense_table(cores)
    np.testing.assert_allclose(tt_reconstruct(cores), table, rtol=1e-5, atol=1e-5)
    tokens = jnp.array([[0, 1, 99], [57, 3, 24]])
    np.testing.assert_allclose(tt_lookup(tokens, cores), table[np.asarray(tokens)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["contract", "materialise", "auto"])
def test_scores_equal_the_dense_tied_head(cores, path):
    h = jax.random.normal(jax.random.key(1), (2, 5, 24))
    expected = np.asarray(h, np.float64) @ dense_table(cores).T
    np.testing.assert_allclose(tt_scores(h, cores, path), expected, rtol=1e-4, atol=1e-4)


def test_score_path_follows_memory(cores):
    assert tt_score_path(1, cores) == "contract"  # one vector: never build the table
    assert tt_score_path(10_000, cores) == "materialise"


def test_init_gives_unit_variance_entries():
    table = tt_reconstruct(tt_init_cores(jax.random.key(2), (8, 8, 8), (4, 4, 2), rank=8))
    assert 0.7 < float(jnp.std(table)) < 1.3
