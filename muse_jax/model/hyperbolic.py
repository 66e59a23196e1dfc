r"""The Poincaré ball of curvature -c (c > 0): B_c = {x : c‖x‖² < 1}. Pure functions.

    Möbius addition   x ⊕_c y = ((1 + 2c⟨x,y⟩ + c‖y‖²) x + (1 - c‖x‖²) y)
                                 / (1 + 2c⟨x,y⟩ + c²‖x‖²‖y‖²)
    exp map at 0      exp_0(v) = tanh(√c‖v‖) v / (√c‖v‖)
    log map at 0      log_0(y) = artanh(√c‖y‖) y / (√c‖y‖)          (log_0 ∘ exp_0 = id)
    distance          d_c(x, y) = (2/√c) artanh(√c ‖(-x) ⊕_c y‖)
                                = (1/√c) arcosh(1 + 2c‖x - y‖² / ((1 - c‖x‖²)(1 - c‖y‖²)))

Float32 safety: points are kept at ‖x‖ ≤ (1 - BALL_EPS)/√c (so 1 - c‖x‖² ≥ ~2·BALL_EPS), norms
are floored at MIN_NORM before dividing, and arcosh(1 + δ) is evaluated as
log1p(δ + sqrt(δ(2 + δ))) with δ ≥ MIN_DELTA, whose derivative is finite.
"""

import jax
import jax.numpy as jnp

BALL_EPS = 1e-5
MIN_NORM = 1e-15
MIN_DELTA = 1e-7  # below this, ‖x - p‖² from a float32 matmul is rounding noise anyway


def _norm(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), MIN_NORM**2))


def poincare_project(x: jax.Array, c) -> jax.Array:
    """Radially pull x inside ‖x‖ ≤ (1 - BALL_EPS)/√c (identity for points already inside)."""
    max_norm = (1.0 - BALL_EPS) / jnp.sqrt(c)
    norm = _norm(x)
    return jnp.where(norm > max_norm, x * (max_norm / norm), x)


def mobius_add(x: jax.Array, y: jax.Array, c) -> jax.Array:
    """x ⊕_c y (vectors on the last axis)."""
    xy = jnp.sum(x * y, axis=-1, keepdims=True)
    x2 = jnp.sum(x * x, axis=-1, keepdims=True)
    y2 = jnp.sum(y * y, axis=-1, keepdims=True)
    num = (1.0 + 2.0 * c * xy + c * y2) * x + (1.0 - c * x2) * y
    den = 1.0 + 2.0 * c * xy + c * c * x2 * y2
    return num / jnp.maximum(den, MIN_NORM)


def poincare_expmap0(v: jax.Array, c) -> jax.Array:
    """exp_0(v) = tanh(√c‖v‖) v / (√c‖v‖), projected into the ball."""
    sqrt_c = jnp.sqrt(c)
    norm = _norm(v)
    return poincare_project(jnp.tanh(sqrt_c * norm) * v / (sqrt_c * norm), c)


def _artanh_clipped(u: jax.Array) -> jax.Array:
    return jnp.arctanh(jnp.clip(u, 0.0, 1.0 - BALL_EPS))


def poincare_logmap0(y: jax.Array, c) -> jax.Array:
    """log_0(y) = artanh(√c‖y‖) y / (√c‖y‖)."""
    sqrt_c = jnp.sqrt(c)
    norm = _norm(y)
    return _artanh_clipped(sqrt_c * norm) * y / (sqrt_c * norm)


def poincare_distance(x: jax.Array, y: jax.Array, c) -> jax.Array:
    """d_c(x, y) = (2/√c) artanh(√c‖(-x) ⊕_c y‖) (the definition; elementwise over leading axes)."""
    sqrt_c = jnp.sqrt(c)
    return (2.0 / sqrt_c) * _artanh_clipped(sqrt_c * _norm(mobius_add(-x, y, c)))[..., 0]


def arcosh1p(delta: jax.Array) -> jax.Array:
    """arcosh(1 + δ) = log1p(δ + sqrt(δ(2 + δ))), δ floored at MIN_DELTA (finite gradient at 0)."""
    delta = jnp.maximum(delta, MIN_DELTA)
    return jnp.log1p(delta + jnp.sqrt(delta * (2.0 + delta)))


def poincare_distance_matrix(x: jax.Array, points: jax.Array, c) -> jax.Array:
    """d_c(x_n, p_t) for all pairs by the arcosh closed form, with ‖x - p‖² from one matmul.

    x: [..., D], points: [V, D] → [..., V]. Memory is that of the result (no [..., V, D] tensor).
    """
    x2 = jnp.sum(x * x, axis=-1, keepdims=True)  # [..., 1]
    p2 = jnp.sum(points * points, axis=-1)  # [V]
    sq_dist = jnp.maximum(x2 + p2 - 2.0 * (x @ points.T), 0.0)
    denom = jnp.maximum((1.0 - c * x2) * (1.0 - c * p2), MIN_NORM)
    return arcosh1p(2.0 * c * sq_dist / denom) / jnp.sqrt(c)
