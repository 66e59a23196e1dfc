"""Width-aware learning rates: μP's rule for Adam-type updates (Yang et al., Tensor Programs V).

With the readout logits = α·h·E/D (`model/embedding.py`) and unit-variance embedding rows, a
hidden matrix W (fan-in ∝ D) moves the next layer's pre-activations by ≈ η·fan_in per Adam step
(every coordinate of the update has size η and they add up coherently against the input), so
the update's effect grows linearly with width at a fixed η. μP keeps it constant by

    η(W) = η · D₀ / D     every kernel whose fan-in grows with D (metadata lr_group="hidden")
    η(E) = η · m_E        the embedding table or its TT cores (lr_group="embedding")
    η(p) = η              everything else: norm scales, biases, BK energies and widths,
                          kernels of fixed fan-in

where η is the configured peak learning rate, tuned at the base width D₀ = `optim.lr_base_width`
(0: no width scaling, the standard parametrisation) and m_E = `optim.embed_lr_mult`, constant in
width as μP's embedding rate is. With a unit-variance table, m_E and the head's α trade off
exactly like an init scale: storing E' = E/m_E read as m_E·E' gives the same Adam trajectory, so
(α, m_E) is (α·m_E at the read-out, a table of std 1/m_E) — a small first loss from a small α,
the read-out's learning speed from α·m_E. The scale multiplies the whole update (decoupled
weight decay included), so it composes with any optimizer of the chain; it is derived, and
measured (results/width_sweep), for AdamW.
"""

import jax
import jax.numpy as jnp
import optax


def width_lr_multipliers(lr_groups, d_model: int, base_width: int, embed_lr_mult: float = 1.0):
    """From a tree of learning-rate groups (`ParamRoles.lr_group`: "hidden", "embedding" or None),
    the tree of multipliers: D₀/D for hidden kernels (1 if base_width is 0), m_E for the
    embedding, 1 elsewhere."""
    groups = {"hidden": base_width / d_model if base_width > 0 else 1.0, "embedding": embed_lr_mult}
    return jax.tree.map(lambda group: groups.get(group, 1.0), lr_groups, is_leaf=lambda x: x is None)


def scale_by_multipliers(multipliers) -> optax.GradientTransformation:
    """updates ← updates ⊙ multipliers, one constant per leaf (stateless)."""

    def update(updates, state, params=None):
        del params
        scaled = jax.tree.map(lambda u, m: u if m == 1.0 else u * jnp.asarray(m, u.dtype), updates, multipliers)
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
