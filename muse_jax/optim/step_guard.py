"""Skip a whole optimizer step whose gradient, loss or update is non-finite (or whose gradient
spikes), and count it."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class StepGuardState(NamedTuple):
    inner_state: Any
    skipped_steps: jax.Array  # int32: updates skipped so far (never reset)


def all_finite(tree) -> jax.Array:
    """∧ over the floating-point leaves x of `tree` of all(isfinite(x)) (True for no such leaf)."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves])) if leaves else jnp.array(True)


def is_bad_step(grads, loss: jax.Array | None, max_grad_norm: float) -> jax.Array:
    """bad = ¬finite(‖g‖) ∨ ¬finite(loss) ∨ (max_grad_norm > 0 ∧ ‖g‖ > max_grad_norm)."""
    norm = optax.tree.norm(grads)
    bad = ~jnp.isfinite(norm)
    if loss is not None:
        bad |= ~jnp.isfinite(loss)
    if max_grad_norm > 0:
        bad |= norm > max_grad_norm
    return bad


def skip_bad_steps(inner: optax.GradientTransformation, max_grad_norm: float = 0.0) -> optax.GradientTransformationExtraArgs:
    """Wraps `inner`; on a bad step returns zero updates and `inner`'s state unchanged, so params,
    moments, schedule counts and every stateful transform inside are exactly as before, and adds
    1 to `skipped_steps`. A step is bad when `is_bad_step` says so (`loss` is an optional extra
    argument), when the update `inner` computes is not finite (a finite gradient on a state with a
    NaN, or an update that overflows: params + update would not be finite), or when the incoming
    optimizer state is not finite (then every step is skipped, and the run stops at
    `train.max_skipped_in_a_row`, before saving it).

    With gradient accumulation the gradient seen here is the mean over all micro-batches, so one
    NaN micro-batch skips the whole step instead of poisoning the state (the original threw the
    accumulated gradient away and kept going on a half-updated state).

    Like `optax.apply_if_finite`, but it also skips raw-norm spikes and keeps a single counter for
    both. The inner update is always computed and the step's result chosen per leaf by
    `jnp.where(bad, old, new)` (NaNs in the discarded branch never leak through a select): an
    elementwise select fuses into the update, so the new optimizer state can be written in place
    of the donated old one, where a `lax.cond` keeps both alive at once (the update phase of the
    dry run of configs/dense_8gb.py: see the README's "8 GB plan").
    """
    inner = optax.with_extra_args_support(inner)

    def init(params):
        return StepGuardState(inner.init(params), jnp.zeros([], jnp.int32))

    def update(grads, state: StepGuardState, params=None, **extra_args):
        # The update is computed twice: once only to be checked (reduced to one bool, never
        # stored), once to be applied. The barrier keeps XLA from merging the two, so the applied
        # one still fuses with the select below and is written in place (checking the stored
        # update, or the new inner state, keeps a second copy alive in the update phase: the
        # memory limit of configs/dense_8gb.py, README "The 8 GB plan").
        checked = jax.lax.optimization_barrier((grads, state.inner_state, params))
        update_is_finite = all_finite(inner.update(*checked, **extra_args)[0])
        bad = is_bad_step(grads, extra_args.get("loss"), max_grad_norm) | ~update_is_finite | ~all_finite(
            state.inner_state)
        updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
        updates = jax.tree.map(lambda u: jnp.where(bad, jnp.zeros_like(u), u), updates)
        inner_state = jax.tree.map(lambda new, old: jnp.where(bad, old, new), inner_state, state.inner_state)
        return updates, StepGuardState(inner_state, state.skipped_steps + bad.astype(jnp.int32))

    return optax.GradientTransformationExtraArgs(init, update)
