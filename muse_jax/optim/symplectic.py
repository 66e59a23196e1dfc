"""A symplectic optimizer: staggered Störmer–Verlet (leapfrog) on H(x, p) = ½‖p‖² + L(x)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax



class SymplecticState(NamedTuple):
    momentum: Any  # p_{n−½}, like params
    second_moment: Any  # v: EMA of g² (preconditioned only, else None)
    count: jax.Array  # int32: updates taken


def symplectic_leapfrog(
    learning_rate: float | jax.Array,
    friction: float = 0.0,
    precondition: bool = False,
    precondition_decay: float = 0.95,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """One gradient per step, time step h = √learning_rate, β = 1 − friction:

        p_{n+½} = β · p_{n−½} − h · ∇L(x_n)          (kick)
        x_{n+1} = x_n + h · p_{n+½}                   (drift)

    With β = 1 this is Störmer–Verlet in its staggered form: the closing half-kick of step n−1
    and the opening half-kick of step n, both at x_n, are fused into one full kick, so each
    step needs exactly one gradient and the map (x_n, p_{n−½}) → (x_{n+1}, p_{n+½}) is exactly
    symplectic. A modified Hamiltonian H̃ = H + O(h²) is conserved, so on a harmonic oscillator
    the energy error stays bounded for ever instead of growing as with explicit Euler. (The
    original's "symplectic" step reused one gradient for both half-kicks of the same step, which
    is explicit Euler with extra steps, not Verlet.)

    With 0 < friction < 1 the kick first applies the exact flow of ṗ = −γp, p ← e^{−γh} p with
    e^{−γh} = β: the map is conformal symplectic (it contracts dp∧dx by β each step) and the
    iteration converges on a convex L like heavy-ball momentum. In SGD terms it is heavy-ball
    momentum with step size h² = learning_rate and momentum β, so the effective step on a
    steady gradient is learning_rate / (1 − β).

    `learning_rate` is a scalar: pass a schedule through `optax.inject_hyperparams`. A
    changing h makes the composition of steps not exactly symplectic (each step still is).

    `precondition=True` kicks with g / (√v̂ + eps), v̂ the bias-corrected EMA of g² (Adam's
    second moment, decay `precondition_decay`). This is a position- and time-dependent mass
    matrix, so the method is then NOT symplectic; it trades that for scale invariance.
    """
    if not 0.0 <= friction < 1.0:
        raise ValueError(f"friction must be in [0, 1), got {friction}")
    retention = 1.0 - friction

    def init(params):
        second = optax.tree.zeros_like(params) if precondition else None
        return SymplecticState(optax.tree.zeros_like(params), second, jnp.zeros([], jnp.int32))

    def update(grads, state: SymplecticState, params=None):
        del params
        count = optax.safe_increment(state.count)
        second = state.second_moment
        force = grads
        if precondition:
            second = optax.tree.update_moment_per_elem_norm(grads, second, precondition_decay, 2)
            corrected = optax.tree.bias_correction(second, precondition_decay, count)
            force = jax.tree.map(lambda g, v: g / (jnp.sqrt(v) + eps), grads, corrected)
        h = jnp.sqrt(jnp.asarray(learning_rate, jnp.float32))
        momentum = jax.tree.map(lambda p, f: (retention * p - h * f).astype(p.dtype), state.momentum, force)
        updates = jax.tree.map(lambda p: (h * p).astype(p.dtype), momentum)
        return updates, SymplecticState(momentum, second, count)

    return optax.GradientTransformation(init, update)
