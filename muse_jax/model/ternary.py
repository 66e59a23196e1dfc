r"""Ternary weights (BitNet b1.58): absmean quantisation with a straight-through estimator.

    s   = mean_{ij} |W_ij| + eps                         (absmean scale, one per matrix)
    W_q = s · clip(round(W / s), -1, 1)  ∈ {-s, 0, +s}
    forward uses W_q;  backward: dL/dW := dL/dW_q        (straight-through estimator)

The STE is written as ``W + stop_gradient(W_q - W)``: its value is W_q and its Jacobian with
respect to W is the identity. The latent full-precision W is what the optimizer updates (and
what checkpoints store); only the forward pass sees ternary values. Activations stay in full
precision here (BitNet also quantises them to 8 bits; we do not).
"""

import jax
import jax.numpy as jnp

ABSMEAN_EPS = 1e-6


def absmean_scale(w: jax.Array) -> jax.Array:
    """s = mean |W| + eps (a scalar)."""
    return jnp.mean(jnp.abs(w)) + ABSMEAN_EPS


def absmean_ternary(w: jax.Array) -> jax.Array:
    """W_q = s · clip(round(W/s), -1, 1): values in {-s, 0, +s}."""
    s = absmean_scale(w)
    return s * jnp.clip(jnp.round(w / s), -1.0, 1.0)


def ternary_ste(w: jax.Array) -> jax.Array:
    """Forward value absmean_ternary(W), gradient identity (straight-through)."""
    return w + jax.lax.stop_gradient(absmean_ternary(w) - w)
