"""Step guard: non-finite or spiking gradients skip the step, leave the state alone, are counted."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from muse_jax.optim.step_guard import skip_bad_steps

PARAMS = {"w": jnp.array([1.0, -1.0])}


def guarded_step(max_grad_norm=0.0):
    tx = skip_bad_steps(optax.adam(0.1), max_grad_norm)
    return tx, jax.jit(lambda g, s, loss: tx.update({"w": g}, s, PARAMS, loss=loss))


def warm_state(tx, update):
    _, state = update(jnp.array([0.3, 0.4]), tx.init(PARAMS), jnp.float32(2.0))
    return state


@pytest.mark.parametrize(
    "grad, loss",
    [([np.nan, 0.0], 2.0), ([np.inf, 0.0], 2.0), ([0.1, 0.2], np.nan), ([30.0, 40.0], 2.0)],
    ids=["nan-grad", "inf-grad", "nan-loss", "spike"],
)
def test_bad_step_is_skipped_and_counted(grad, loss):
    tx, update = guarded_step(max_grad_norm=10.0)
    state = warm_state(tx, update)
    updates, after = update(jnp.array(grad), state, jnp.float32(loss))
    np.testing.assert_array_equal(updates["w"], [0.0, 0.0])
    jax.tree.map(np.testing.assert_array_equal, after.inner_state, state.inner_state)  # moments, count
    assert int(after.skipped_steps) == int(state.skipped_steps) + 1


def test_good_step_is_applied():
    tx, update = guarded_step(max_grad_norm=10.0)
    state = warm_state(tx, update)
    updates, after = update(jnp.array([3.0, 4.0]), state, jnp.float32(2.0))  # norm 5 < 10
    assert np.all(np.asarray(updates["w"]) != 0)
    assert int(optax.tree.get(after, "count")) == 2 and int(after.skipped_steps) == 0


def test_spikes_pass_when_the_threshold_is_off():
    tx, update = guarded_step(max_grad_norm=0.0)
    _, after = update(jnp.array([3e4, 4e4]), warm_state(tx, update), jnp.float32(2.0))
    assert int(after.skipped_steps) == 0


def test_an_update_that_is_not_finite_is_skipped_though_the_gradient_is():
    """A finite gradient whose update overflows (params + update would be ±inf): skipped."""
    tx = skip_bad_steps(optax.sgd(1e38))
    state = tx.init(PARAMS)
    updates, after = jax.jit(lambda g, s: tx.update({"w": g}, s, PARAMS, loss=jnp.float32(1.0)))(
        jnp.array([1e10, 0.0]), state)
    np.testing.assert_array_equal(updates["w"], [0.0, 0.0])
    assert int(after.skipped_steps) == 1


def test_a_nan_in_the_optimizer_state_skips_every_step_and_never_reaches_the_params():
    """Adam's second moment with a NaN (a corrupted checkpoint): the update it gives is NaN, so the
    step is skipped, and so is every later one (the run stops at train.max_skipped_in_a_row)."""
    tx, update = guarded_step()
    state = warm_state(tx, update)
    nu = optax.tree.get(state, "nu")
    poisoned = optax.tree.set(state, nu={"w": nu["w"].at[0].set(jnp.nan)})
    for _ in range(2):
        updates, poisoned = update(jnp.array([0.3, 0.4]), poisoned, jnp.float32(2.0))
        np.testing.assert_array_equal(updates["w"], [0.0, 0.0])
    assert int(poisoned.skipped_steps) == 2
