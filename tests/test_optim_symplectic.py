"""Symplectic leapfrog: it is Verlet, it conserves energy on an oscillator, friction converges."""

import jax
import jax.numpy as jnp
import numpy as np

from muse_jax.optim.symplectic import symplectic_leapfrog

H = 0.1  # time step; learning_rate = h²


def trajectory(tx, grad_fn, x0, steps: int):
    """Positions x_1..x_n and momenta p_{1/2}..p_{n-1/2} from x_0 and p_{-1/2} = 0."""

    def body(carry, _):
        x, state = carry
        updates, state = tx.update(grad_fn(x), state)
        x = x + updates
        return (x, state), (x, state.momentum)

    _, (xs, ps) = jax.jit(lambda x: jax.lax.scan(body, (x, tx.init(x)), None, length=steps))(x0)
    return np.asarray(xs), np.asarray(ps)


def test_positions_equal_velocity_verlet():
    """Staggered leapfrog from p_{-1/2} = 0 is velocity Verlet from p_0 = -(h/2)∇L(x_0)."""
    omega2 = np.array([1.0, 4.0])
    xs, _ = trajectory(symplectic_leapfrog(H * H), lambda x: omega2 * x, jnp.array([1.0, -0.5]), 50)
    x = np.array([1.0, -0.5])
    p = -(H / 2) * omega2 * x
    expected = []
    for _ in range(50):
        p_half = p - (H / 2) * omega2 * x
        x = x + H * p_half
        p = p_half - (H / 2) * omega2 * x
        expected.append(x)
    np.testing.assert_allclose(xs, np.array(expected), rtol=1e-5, atol=1e-6)


def test_energy_error_bounded_on_harmonic_oscillator_unlike_euler():
    steps = 10_000
    xs, ps = trajectory(symplectic_leapfrog(H * H), lambda x: x, jnp.array([1.0]), steps)
    energy = 0.5 * xs[:, 0] ** 2 + 0.5 * ps[:, 0] ** 2
    assert np.max(np.abs(energy - 0.5)) / 0.5 < 0.06  # bounded: O(h) for staggered momenta
    assert abs(energy[-1000:].mean() - energy[:1000].mean()) < 1e-3  # no drift

    x, p = 1.0, 0.0  # explicit Euler, the same one gradient per step
    for _ in range(steps):
        x, p = x + H * p, p - H * x
    assert (0.5 * x * x + 0.5 * p * p) / 0.5 > 1e6  # grows like (1 + h²)^n


def test_friction_converges_on_a_quadratic():
    curvature = jnp.array([1.0, 10.0, 0.3])
    x0 = jnp.array([1.0, -2.0, 3.0])
    damped, _ = trajectory(symplectic_leapfrog(H * H, friction=0.1), lambda x: curvature * x, x0, 2000)
    assert np.max(np.abs(damped[-1])) < 1e-4
    undamped, _ = trajectory(symplectic_leapfrog(H * H), lambda x: curvature * x, x0, 2000)
    assert np.max(np.abs(undamped[-100:])) > 0.1  # without friction it oscillates for ever


def test_preconditioned_variant_converges_on_a_badly_scaled_quadratic():
    curvature = jnp.array([1e-2, 1e2])
    tx = symplectic_leapfrog(1e-3, friction=0.2, precondition=True, precondition_decay=0.9)
    xs, _ = trajectory(tx, lambda x: curvature * x, jnp.array([1.0, 1.0]), 3000)
    assert np.max(np.abs(xs[-1])) < 0.05
