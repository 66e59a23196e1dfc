"""Poincaré-ball maps and distances: identities, closed forms, float32 safety at the boundary."""

import jax
import jax.numpy as jnp
import numpy as np

from muse_jax.model.hyperbolic import (
    mobius_add, poincare_distance, poincare_distance_matrix, poincare_expmap0, poincare_logmap0,
)


def random_ball_points(seed: int, n: int, d: int, c: float, max_radius: float = 0.9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    radius = rng.uniform(0, max_radius, (n, 1)) / np.sqrt(c)
    return x / np.linalg.norm(x, axis=-1, keepdims=True) * radius


def test_log_inverts_exp():
    v = np.random.default_rng(0).normal(0, 0.7, (16, 8))
    for c in (0.1, 1.0, 3.0):
        with jax.enable_x64(True):
            np.testing.assert_allclose(poincare_logmap0(poincare_expmap0(v, c), c), v, rtol=1e-9, atol=1e-12)


def test_mobius_addition_identities():
    x, y = random_ball_points(1, 5, 4, 2.0), random_ball_points(2, 5, 4, 2.0)
    with jax.enable_x64(True):
        np.testing.assert_allclose(mobius_add(x, np.zeros_like(x), 2.0), x, atol=1e-12)
        np.testing.assert_allclose(mobius_add(-x, x, 2.0), 0 * x, atol=1e-12)
        # c → 0 recovers vector addition
        np.testing.assert_allclose(mobius_add(x, y, 1e-9), x + y, atol=1e-7)


def test_distance_matches_closed_form():
    c = 0.7
    x, y = random_ball_points(3, 12, 6, c), random_ball_points(4, 12, 6, c)
    nx, ny = (np.sum(p * p, -1) for p in (x, y))
    closed = np.arccosh(1 + 2 * c * np.sum((x - y) ** 2, -1) / ((1 - c * nx) * (1 - c * ny))) / np.sqrt(c)
    with jax.enable_x64(True):
        np.testing.assert_allclose(poincare_distance(x, y, c), closed, rtol=1e-9)
        pairwise = poincare_distance_matrix(x, y, c)  # [12, 12]
        np.testing.assert_allclose(np.diagonal(pairwise), closed, rtol=1e-7)
        np.testing.assert_allclose(pairwise[2, 5], poincare_distance(x[2], y[5], c), rtol=1e-7)
        # distance from the origin: (2/√c) artanh(√c‖y‖)
        np.testing.assert_allclose(poincare_distance(0 * y, y, c), 2 / np.sqrt(c) * np.arctanh(np.sqrt(c * ny)),
                                   rtol=1e-9)


def test_no_nan_near_the_boundary_in_float32():
    c = jnp.float32(1.0)
    direction = jnp.ones((4, 8), jnp.float32) / jnp.sqrt(8.0)
    huge = direction * jnp.array([[1.0], [10.0], [1e3], [1e6]], jnp.float32)
    on_edge = direction * jnp.float32(1 - 1e-7)  # outside the float32-safe radius

    def total(v, p):
        q = poincare_expmap0(v, c)
        return (poincare_distance_matrix(q, p, c).sum() + poincare_distance(q, p, c).sum()
                + poincare_logmap0(p, c).sum())

    values = [poincare_expmap0(huge, c), poincare_logmap0(on_edge, c), poincare_distance(on_edge, -on_edge, c),
              poincare_distance_matrix(on_edge, on_edge, c), poincare_distance(on_edge, on_edge, c)]
    grads = jax.grad(total, argnums=(0, 1))(huge, on_edge)
    for x in values + list(grads):
        assert x.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(x)))
    assert float(jnp.max(jnp.linalg.norm(values[0], axis=-1))) < 1.0
