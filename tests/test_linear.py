"""Low-rank and ternary linear layers: equal to their dense references; STE gradient."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from muse_jax.model.linear import DenseLinear, LinearSpec, LowRankLinear
from muse_jax.model.low_rank import low_rank_matmul, low_rank_saves_parameters
from muse_jax.model.ternary import absmean_scale, absmean_ternary, ternary_ste


def test_ternary_values_are_minus_zero_plus_scale():
    w = jax.random.normal(jax.random.key(0), (64, 48)) * 0.3
    q, s = absmean_ternary(w), absmean_scale(w)
    np.testing.assert_allclose(s, jnp.mean(jnp.abs(w)), rtol=1e-5)
    levels = np.unique(np.round(np.asarray(q / s), 5))
    assert set(levels.tolist()) == {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(np.sign(q), np.sign(w) * (jnp.abs(w) >= 0.5 * s))


def test_straight_through_gradient_is_identity():
    w = jax.random.normal(jax.random.key(1), (8, 5))
    cotangent = jax.random.normal(jax.random.key(2), (8, 5))
    np.testing.assert_allclose(ternary_ste(w), absmean_ternary(w))
    grad = jax.grad(lambda w: jnp.sum(ternary_ste(w) * cotangent))(w)
    np.testing.assert_allclose(grad, cotangent, rtol=1e-6)


def test_low_rank_equals_the_dense_product_and_has_that_rank():
    x = jax.random.normal(jax.random.key(3), (4, 32))
    layer = LowRankLinear(32, 48, 5, use_bias=True, bias_value=0.5, rngs=nnx.Rngs(0))
    w = layer.factor_in.kernel[...] @ layer.factor_out.kernel[...]
    np.testing.assert_allclose(layer(x), x @ w + 0.5, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(low_rank_matmul(x, layer.factor_in.kernel[...], layer.factor_out.kernel[...]), x @ w,
                               rtol=1e-5, atol=1e-5)
    assert np.linalg.matrix_rank(np.asarray(w)) == 5


def test_spec_factorises_only_where_it_saves_parameters():
    assert low_rank_saves_parameters(128, 384, 32) and not low_rank_saves_parameters(16, 16, 8)
    spec = LinearSpec(rank=8, ternary=True)
    assert isinstance(spec.make(64, 64, rngs=nnx.Rngs(0)), LowRankLinear)
    small = spec.make(16, 16, rngs=nnx.Rngs(0))
    assert isinstance(small, DenseLinear) and small.ternary
    x = jnp.ones((2, 16))
    np.testing.assert_allclose(small(x), x @ absmean_ternary(small.kernel[...]), atol=1e-6)
