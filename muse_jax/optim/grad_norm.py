"""An identity transform that records the global norm of what passes through it."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class ClippedNormState(NamedTuple):
    grad_norm_clipped: jax.Array  # float32: ‖g‖ of the last update, after clipping


def record_clipped_norm() -> optax.GradientTransformation:
    """Placed right after `optax.clip_by_global_norm`: updates pass unchanged, and the state holds
    ‖g_clipped‖ = min(‖g‖, threshold) for logging (read with `optax.tree.get`)."""

    def init(params):
        del params
        return ClippedNormState(jnp.zeros([], jnp.float32))

    def update(updates, state, params=None):
        del state, params
        return updates, ClippedNormState(optax.tree.norm(updates).astype(jnp.float32))

    return optax.GradientTransformation(init, update)
