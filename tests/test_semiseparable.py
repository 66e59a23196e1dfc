"""Semiseparable mixing y_i = Σ_{j≤i} [(H_{1:i} − z)⁻¹]_{ij} v_j against a dense float64 inverse per prefix."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_jax.model.semiseparable import APPLY_SCANS, apply_scan_for, causal_resolvent_apply, causal_resolvent_mix


def dense_prefix_mix(a, kappa, z, v) -> np.ndarray:
    """For each prefix i: row i of inv(H_{1:i} − z) (float64) times v_{1:i}."""
    n = a.shape[-1]
    b = np.sqrt(kappa[1:].astype(np.float64))
    h = np.diag(a.astype(np.float64)) + np.diag(b, 1) + np.diag(b, -1)
    y = np.empty(n, np.complex128)
    for i in range(1, n + 1):
        y[i - 1] = np.linalg.inv(h[:i, :i] - z * np.eye(i))[i - 1] @ v[:i]
    return y


@functools.lru_cache(maxsize=None)
def random_problem(seed: int, n: int, channels: int = 3):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.5, (channels, n))
    kappa = rng.uniform(0.0, 2.0, (channels, n))
    z = rng.normal(0.0, 1.0, (channels, 1)) + 1j * rng.uniform(0.05, 1.0, (channels, 1))
    v = rng.normal(size=(channels, n))
    reference = np.stack([dense_prefix_mix(a[c], kappa[c], z[c, 0], v[c]) for c in range(channels)])
    return a, kappa, z, v, reference


@pytest.mark.parametrize("impl", APPLY_SCANS)
def test_matches_dense_inverse_per_prefix_float64(impl):
    a, kappa, z, v, reference = random_problem(0, 24)
    with jax.enable_x64(True):
        g, y = causal_resolvent_mix(a, kappa, z, v, impl=impl)
        assert y.dtype == jnp.complex128
        np.testing.assert_allclose(np.asarray(y), reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", APPLY_SCANS)
def test_float32_is_accurate_on_a_long_sequence(impl):
    """N = 128, float32: the ratio form (2) stays accurate (no minor θ_i is ever formed)."""
    a, kappa, z, v, reference = random_problem(1, 128, channels=2)
    _, y = causal_resolvent_mix(a.astype(np.float32), kappa.astype(np.float32), z.astype(np.complex64),
                                v.astype(np.float32), impl=impl)
    assert y.dtype == jnp.complex64
    scale = np.abs(reference).max()
    np.testing.assert_allclose(np.asarray(y), reference, atol=2e-5 * scale)


def test_gradients_finite_and_impls_agree():
    a, kappa, z, v, _ = random_problem(2, 16)
    a, kappa, v = (x.astype(np.float32) for x in (a, kappa, v))
    z = z.astype(np.complex64)

    def loss(impl):
        def f(a, kappa, v):
            _, y = causal_resolvent_mix(a, kappa, z, v, impl=impl)
            return jnp.sum(jnp.real(y) ** 2 + jnp.imag(y))
        return jax.grad(f, argnums=(0, 1, 2))(a, kappa, v)

    grads = {impl: loss(impl) for impl in APPLY_SCANS}
    for ga, gs in zip(grads["associative"], grads["sequential"]):
        assert np.all(np.isfinite(ga))
        np.testing.assert_allclose(ga, gs, rtol=1e-3, atol=1e-4)


def _intermediate_sizes(jaxpr) -> list[int]:
    sizes = []
    for eqn in jaxpr.eqns:
        sizes += [int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape")]
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                sizes += _intermediate_sizes(inner)
    return sizes


@pytest.mark.parametrize("impl", APPLY_SCANS)
def test_memory_is_linear_in_sequence_length(impl):
    """No intermediate of the traced computation grows like N² (N = 1024: N² would be 1M)."""
    n = 1024
    g = jnp.ones((2, n), jnp.complex64)
    kappa = jnp.ones((2, n), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda g, k, v: causal_resolvent_apply(g, k, v, impl=impl))(g, kappa, kappa)
    assert max(_intermediate_sizes(jaxpr.jaxpr)) <= 4 * 2 * n


def test_every_bk_core_impl_maps_to_a_scan():
    from muse_jax.model.bk_core import IMPLS

    assert {apply_scan_for(impl) for impl in IMPLS} <= set(APPLY_SCANS)
    assert apply_scan_for("pallas") == apply_scan_for("auto")  # the kernels compute g only, not the mix
    with pytest.raises(ValueError, match="unknown impl"):
        apply_scan_for("fft")
