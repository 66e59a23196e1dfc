"""Gradient aligner: remove the part of a leaf's gradient that opposes its recent direction."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax



class AlignerState(NamedTuple):
    reference: Any  # r: EMA of the raw gradients, one per leaf
    count: jax.Array  # int32: updates seen
    opposite_fraction: jax.Array  # float32: fraction of leaves that opposed r at the last update
    energy_removed: jax.Array  # float32: (‖g‖² − ‖g'‖²) / ‖g‖² at the last update


def align_leaf(g: jax.Array, r: jax.Array, min_alignment: float, strength: float):
    """One leaf.  cos = ⟨g, r⟩ / (‖g‖‖r‖)  (0 when either is 0).

    If cos < min_alignment (≤ 0, so ⟨g, r⟩ < 0):  g' = g − strength · (⟨g, r⟩ / ‖r‖²) · r,
    i.e. `strength` × the projection of g on r, which points against r.  Else g' = g.
    Returns (g', opposed).
    """
    dot = jnp.vdot(g, r).real
    gg, rr = jnp.vdot(g, g).real, jnp.vdot(r, r).real
    denom = jnp.sqrt(gg * rr)
    cos = jnp.where(denom > 0, dot / jnp.where(denom > 0, denom, 1.0), 0.0)
    opposed = cos < min_alignment
    coeff = jnp.where(opposed, strength * dot / jnp.where(rr > 0, rr, 1.0), 0.0)
    return g - coeff.astype(g.dtype) * r, opposed


def gradient_aligner(
    min_alignment: float = 0.0, strength: float = 1.0, warmup: int = 0, reference_decay: float = 0.9
) -> optax.GradientTransformation:
    """Per leaf, at step t: where g_t opposes the PREVIOUS reference r_{t−1} (cos < `min_alignment`)
    remove `strength` × its projection on r_{t−1} (`align_leaf`); then r_t = β r_{t−1} + (1 − β) g_t
    (β = `reference_decay`, from the raw g_t). The order matters: r_t already contains g_t, which
    would pull cos towards +1 and hide the opposition (docs/training.md). For the first `warmup` updates it only observes: the statistics are computed
    and logged, the gradient passes unchanged.

    State reports `opposite_fraction` (leaves with cos < min_alignment / leaves) and
    `energy_removed` = Σ(‖g‖² − ‖g'‖²) / Σ‖g‖², the fraction of gradient energy the aligner
    took away (the original removed 5–9 % without saying so).
    """
    if not -1.0 <= min_alignment <= 0.0:
        raise ValueError(f"min_alignment must be in [-1, 0], got {min_alignment}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if not 0.0 <= reference_decay < 1.0:
        raise ValueError(f"reference_decay must be in [0, 1), got {reference_decay}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")

    def init(params):  # a fresh buffer per field: the train step donates the state
        return AlignerState(optax.tree.zeros_like(params), jnp.zeros([], jnp.int32),
                            jnp.zeros([], jnp.float32), jnp.zeros([], jnp.float32))

    def update(grads, state: AlignerState, params=None):
        del params
        leaves, treedef = jax.tree.flatten(grads)
        refs = treedef.flatten_up_to(state.reference)
        results = [align_leaf(g, r, min_alignment, strength) for g, r in zip(leaves, refs)]
        active = state.count >= warmup
        aligned = [jnp.where(active, g_new, g) for (g_new, _), g in zip(results, leaves)]
        opposite_fraction = jnp.mean(jnp.stack([o for _, o in results]).astype(jnp.float32))
        before = optax.tree.norm(leaves, squared=True)
        after = optax.tree.norm(aligned, squared=True)
        energy_removed = jnp.where(before > 0, (before - after) / jnp.where(before > 0, before, 1.0), 0.0)
        reference = optax.tree.update_moment(grads, state.reference, reference_decay, 1)
        new_state = AlignerState(
            reference, optax.safe_increment(state.count),
            opposite_fraction, energy_removed.astype(jnp.float32),
        )
        return jax.tree.unflatten(treedef, aligned), new_state

    return optax.GradientTransformation(init, update)
