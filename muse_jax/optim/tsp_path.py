"""TSP path optimizer: move along a path of "cities" (hyperparameter settings) as training goes.

A city is one value per named hyperparameter of an `optax.inject_hyperparams` transform, e.g.
(lr_scale, clip_scale). The original's Japanese preset, in path order:
    explore 1.5/2.0 → active 1.2/1.5 → stabilize 1.0/1.2 → finetune 0.8/1.0 → converge 1.0/1.0
"""

from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax



class TSPState(NamedTuple):
    inner_state: Any  # the wrapped inject_hyperparams state
    count: jax.Array  # int32: optimizer steps taken (skipped steps are not seen)
    city: jax.Array  # int32: index of the current city
    steps_in_city: jax.Array  # int32: steps since the last move
    losses: jax.Array  # float32 [window]: ring buffer, slot count % window
    grad_norms: jax.Array  # float32 [window]
    key: jax.Array  # uint32 [2]: raw PRNG key for ε-greedy exploration


def detrended_cv(ring: jax.Array, count: jax.Array) -> jax.Array:
    """Coefficient of variation around the least-squares line through the window:
    y_t (oldest first), ŷ_t = ȳ + b (t − t̄), cv = std(y − ŷ) / |ȳ|.
    A steadily falling loss has cv ≈ 0; only oscillation counts (the raw CV of a falling loss
    grows with the slope, which would read progress as instability)."""
    y = jnp.roll(ring, -(count % ring.shape[0]))
    t = jnp.arange(y.shape[0], dtype=jnp.float32)
    t = t - t.mean()
    mean = y.mean()
    slope = jnp.sum(t * (y - mean)) / jnp.sum(t * t)
    residual = y - mean - slope * t
    return jnp.sqrt(jnp.mean(jnp.square(residual))) / jnp.maximum(jnp.abs(mean), 1e-12)


def tsp_path(
    inner: optax.GradientTransformationExtraArgs,
    cities: Mapping[str, Sequence[float]],
    eval_interval: int,
    window_size: int,
    loss_cv_threshold: float,
    grad_cv_threshold: float,
    epsilon: float,
    min_dwell: int,
    seed: int,
) -> optax.GradientTransformationExtraArgs:
    """Wraps `inner` (an `optax.inject_hyperparams` transform with numeric hyperparameters named
    as the keys of `cities`) and sets those hyperparameters to the current city before every
    update. Needs `loss` as an extra argument.

    Each optimizer step records (loss, ‖g‖) in a window of `window_size`. Every `eval_interval`
    steps, once the window is full and the current city has been held ≥ `min_dwell` steps:
      oscillating = cv(loss) > loss_cv_threshold ∨ cv(‖g‖) > grad_cv_threshold   (`detrended_cv`)
      with probability ε: a uniformly random city (exploration),
      else: the next city on the path if oscillating, the same city if smooth.
    Start at city 0. The PRNG key and all statistics live in the state, so the path is a pure
    function of (seed, losses, gradients) and survives a checkpoint. Counts optimizer steps
    (the original counted micro-steps and was unseeded).
    """
    names = list(cities)
    table = {name: jnp.asarray(cities[name], jnp.float32) for name in names}
    num_cities = {len(v) for v in cities.values()}
    if len(num_cities) != 1 or 0 in num_cities:
        raise ValueError(f"every city needs one value per hyperparameter (lr_scales, clip_scales of one length), got {dict(cities)}")
    (num_cities,) = num_cities
    if eval_interval < 1 or window_size < 2 or min_dwell < 0 or not 0.0 <= epsilon <= 1.0:
        raise ValueError(
            f"tsp_path needs eval_interval >= 1, window_size >= 2, min_dwell >= 0, epsilon in [0, 1]; got "
            f"{eval_interval}, {window_size}, {min_dwell}, {epsilon}"
        )

    def with_city(inner_state, city):
        hyperparams = dict(inner_state.hyperparams)
        for name in names:
            if name not in hyperparams:
                raise ValueError(f"city hyperparameter {name!r} is not one of {sorted(hyperparams)}")
            hyperparams[name] = table[name][city].astype(hyperparams[name].dtype)
        return inner_state._replace(hyperparams=hyperparams)

    def init(params):  # one fresh buffer per field: the train step donates the state
        city = jnp.zeros([], jnp.int32)
        return TSPState(
            with_city(inner.init(params), city), jnp.zeros([], jnp.int32), city, jnp.zeros([], jnp.int32),
            jnp.zeros([window_size], jnp.float32), jnp.zeros([window_size], jnp.float32), jax.random.PRNGKey(seed),
        )

    def next_city(state: TSPState, count, losses, grad_norms):
        decide = (count >= window_size) & (count % eval_interval == 0) & (state.steps_in_city >= min_dwell)
        split = jax.random.split(state.key, 3)
        key, explore_key, city_key = split[0], split[1], split[2]
        oscillating = (detrended_cv(losses, count) > loss_cv_threshold) | (
            detrended_cv(grad_norms, count) > grad_cv_threshold
        )
        greedy = jnp.where(oscillating, jnp.minimum(state.city + 1, num_cities - 1), state.city)
        explore = jax.random.uniform(explore_key) < epsilon
        random_city = jax.random.randint(city_key, [], 0, num_cities)
        city = jnp.where(decide, jnp.where(explore, random_city, greedy), state.city)
        return city.astype(jnp.int32), jnp.where(decide, key, state.key)

    def update(grads, state: TSPState, params=None, *, loss, **extra_args):
        slot = state.count % window_size
        losses = state.losses.at[slot].set(jnp.asarray(loss, jnp.float32))
        grad_norms = state.grad_norms.at[slot].set(optax.tree.norm(grads).astype(jnp.float32))
        count = state.count + 1
        city, key = next_city(state, count, losses, grad_norms)
        steps_in_city = jnp.where(city == state.city, state.steps_in_city + 1, 0)
        inner_state = with_city(state.inner_state, city)
        updates, inner_state = inner.update(grads, inner_state, params, loss=loss, **extra_args)
        return updates, TSPState(inner_state, count, city, steps_in_city, losses, grad_norms, key)

    return optax.GradientTransformationExtraArgs(init, update)
