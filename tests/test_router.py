"""Routing rules: scattering (zero parameters, every expert reachable), learned top-k, balancing loss."""

import jax
import jax.numpy as jnp
import numpy as np

from muse_jax.model.router import (
    expert_load, load_balancing_loss, routing_metrics, scattering_phase, scattering_route, top_k_route,
)


def test_scattering_bins_the_total_phase_mod_pi():
    # Channel phases that sum to a known value: arg g = π/3 and π/2 + π/12 → δ = 11π/12 → bin 3 of 4.
    g = jnp.array([[jnp.exp(1j * jnp.pi / 3), jnp.exp(1j * 7 * jnp.pi / 12)]])
    np.testing.assert_allclose(scattering_phase(g), [11 * np.pi / 12], rtol=1e-6)
    np.testing.assert_array_equal(scattering_route(g, 4), [[0, 0, 0, 1]])


def test_every_expert_is_reachable():
    """Upper-half-plane g with phases spread over (0, π) reach all E bins."""
    phases = jnp.linspace(0.01, jnp.pi - 0.01, 64)[:, None]
    gates = scattering_route(jnp.exp(1j * phases), 5)
    assert np.all(np.asarray(expert_load(gates)) > 0)


def test_top_k_gates_and_balance_loss():
    logits = jax.random.normal(jax.random.key(0), (3, 7, 4))
    gates, probs = top_k_route(logits, 2)
    assert np.all(np.sum(np.asarray(gates) > 0, -1) == 2)
    np.testing.assert_allclose(gates.sum(-1), 1.0, rtol=1e-6)
    # perfectly balanced assignment and probabilities → loss 1
    uniform = jnp.full((8, 4), 0.25)
    one_hot = jax.nn.one_hot(jnp.arange(8) % 4, 4)
    np.testing.assert_allclose(load_balancing_loss(one_hot, uniform), 1.0, rtol=1e-6)
    # everything on one expert with full confidence → loss E
    skewed = jax.nn.one_hot(jnp.zeros(8, int), 4)
    np.testing.assert_allclose(load_balancing_loss(skewed, skewed), 4.0, rtol=1e-6)


def test_routing_metrics():
    aux = {"aux_loss": jnp.float32(0.5), "expert_load": jnp.array([[0.5, 0.5], [1.0, 0.0]])}
    metrics = routing_metrics(aux)
    assert float(metrics["expert_load_e0"]) == 0.75 and float(metrics["expert_load_min"]) == 0.0
    assert routing_metrics({"aux_loss": jnp.float32(0), "expert_load": jnp.zeros((2, 0))}) == {}
