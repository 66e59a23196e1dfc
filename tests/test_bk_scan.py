"""Tests for muse_jax.model.bk_scan: chunk boundaries, the custom VJP against plain autodiff,
compensated arithmetic, memory linear in N, and the issue's numerical-range test at N = 2^20."""

from __future__ import annotations

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from muse_jax.model import bk_scan
from muse_jax.model.bk_core import causal_resolvent_diag, prepare_inputs


def _inputs(rng, batch, n, k_max=2.0, imz=(0.1, 1.0)):
    a = rng.normal(size=batch + (n,)).astype(np.float32)
    kappa = rng.uniform(0.0, k_max, size=batch + (n,)).astype(np.float32)
    zb = batch[-1:] + (1,) if batch else ()
    z = (rng.normal(size=zb) + 1j * rng.uniform(*imz, size=zb)).astype(np.complex64)
    return a, kappa, z


def _reference(a, kappa, z):
    """Plain autodiff through a complex lax.scan of the recursion (same dtype as the inputs)."""
    a_, k_, z_ = prepare_inputs(a, kappa, z)
    return bk_scan.sequential_autodiff(a_.astype(z_.dtype) - z_[..., None], k_)


def _maxrel(x, ref):
    return float(np.max(np.abs(np.asarray(x) - ref) / np.abs(ref)))


def test_chunk_count():
    assert bk_scan.chunk_count(bk_scan.TARGET_LANES, 10_000) == 1
    assert bk_scan.chunk_count(1, 1 << 24) == bk_scan.TARGET_LANES
    assert bk_scan.chunk_count(128, 16384) * 128 >= bk_scan.TARGET_LANES
    assert bk_scan.chunk_count(1, 4 * bk_scan.MIN_CHUNK + 1) == 4  # chunks never shorter than MIN_CHUNK
    assert bk_scan.chunk_count(1, bk_scan.MIN_CHUNK - 1) == 1


@pytest.mark.parametrize("batch", [(), (2, 3, 2)])
def test_chunk_boundaries_values_and_grads(batch):
    """Chunk counts from 1 to N (chunk length 1), dividing N or not (padding): values and
    gradients equal the plain-autodiff reference."""
    rng = np.random.default_rng(0)
    n = 37
    a, kappa, z = _inputs(rng, batch, n)
    w = rng.normal(size=a.shape).astype(np.float32)

    def grads(g_of):
        def loss(a_, k_, z_):
            g = g_of(a_, k_, z_)
            return jnp.sum(jnp.real(g) * w + jnp.imag(g) ** 2)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(a, kappa, z)

    ref_loss, ref = grads(_reference)
    g_ref = np.asarray(_reference(a, kappa, z))
    for n_chunks in (2, 5, 37):  # explicit counts may make chunks shorter than MIN_CHUNK
        f = lambda a_, k_, z_, nc=n_chunks: causal_resolvent_diag(a_, k_, z_, impl="chunked", n_chunks=nc)  # noqa: E731
        assert _maxrel(f(a, kappa, z), g_ref) <= 2e-6, n_chunks
        loss, got = grads(f)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
        for name, x, r in zip(("a", "kappa", "z"), got, ref):
            assert x.shape == r.shape and x.dtype == r.dtype, name
            np.testing.assert_allclose(x, r, rtol=2e-5, atol=2e-6 * np.max(np.abs(r)), err_msg=f"{n_chunks} {name}")


@pytest.mark.parametrize("variant", [("sequential", None), ("chunked", 6)])
def test_custom_vjp_equals_autodiff_float64(variant):
    """In float64 the hand-written adjoint equals plain autodiff to rounding: the derivation
    (adjoint recursion, kappabar shift, chunk messages, z summed over broadcast rows) is exact."""
    impl, n_chunks = variant
    rng = np.random.default_rng(1)
    a, kappa, z = _inputs(rng, (2, 3), 50)
    ct = (rng.normal(size=a.shape) + 1j * rng.normal(size=a.shape)).astype(np.complex64)
    with jax.enable_x64(True):
        args = (a.astype(np.float64), kappa.astype(np.float64), z.astype(np.complex128))
        ct64 = ct.astype(np.complex128)
        g_ref, vjp_ref = jax.vjp(_reference, *args)
        g, vjp = jax.vjp(lambda *x: causal_resolvent_diag(*x, impl=impl, n_chunks=n_chunks), *args)
        np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-12)
        for x, r in zip(vjp(ct64), vjp_ref(ct64)):
            assert x.dtype == r.dtype and x.shape == r.shape
            np.testing.assert_allclose(np.asarray(x), np.asarray(r), rtol=1e-10, atol=1e-12 * np.max(np.abs(r)))


def test_second_order_reverse_mode():
    """grad of grad goes through the custom VJP's backward pass (itself plain JAX)."""
    rng = np.random.default_rng(2)
    a, kappa, z = _inputs(rng, (2,), 24)

    def hvp(g_of):
        def loss(a_):
            return jnp.sum(jnp.imag(g_of(a_, kappa, z)))

        return jax.grad(lambda a_: jnp.sum(jax.grad(loss)(a_) ** 2))(a)

    ref = np.asarray(hvp(_reference))
    got = np.asarray(hvp(lambda *x: causal_resolvent_diag(*x, impl="sequential")))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.max(np.abs(ref)))


# ---------------------------------------------------------------------------
# worst-case inputs of the issue: |a| up to 1e4, kappa up to 1e4, Im z = 1e-3
# ---------------------------------------------------------------------------
def _range_inputs(n, seed):
    """Half the sequence a ~ N(0, 1) (near-resonant with Re z: the ill-conditioned regime),
    half a ~ U(-1e4, 1e4); kappa ~ U(0, 1e4) throughout; z = 0.3 + 1e-3 i."""
    rng = np.random.default_rng(seed)
    a = np.concatenate([rng.normal(size=n // 2), rng.uniform(-1e4, 1e4, n - n // 2)]).astype(np.float32)
    kappa = rng.uniform(0.0, 1e4, n).astype(np.float32)
    return a[None], kappa[None], np.array([[0.3 + 1e-3j]], np.complex64)


def _float64_reference(a, kappa, z):
    with jax.enable_x64(True):
        args = (a.astype(np.float64), kappa.astype(np.float64), z.astype(np.complex128))
        return np.asarray(jax.jit(_reference)(*args))


ULP32 = 2.0**-24  # float32 unit roundoff


def test_compensated_is_accurate_where_float32_is_not():
    """N = 4096 of the worst-case inputs, against the float64 recursion: plain float32 arithmetic
    (sequential) loses accuracy, max relative error > 1e-5 (measured 4.2e-5, 22 positions above
    1e-5), while compensated stays within a few ulp (<= 4 · 2^-24 ≈ 2.4e-7; measured 5.9e-8) --
    at least 40x better. Its gradients equal the plain ones (same adjoint, more accurate g)."""
    a, kappa, z = _range_inputs(4096, seed=3)
    ref = _float64_reference(a, kappa, z)
    compensated = _maxrel(causal_resolvent_diag(a, kappa, z, impl="sequential", compensated=True), ref)
    plain = _maxrel(causal_resolvent_diag(a, kappa, z, impl="sequential"), ref)
    assert plain > 1e-5, plain  # the ill-conditioned regime: float32 is not enough here
    assert compensated <= 4 * ULP32, compensated
    assert compensated * 40 <= plain, (compensated, plain)
    grad = lambda comp: jax.grad(  # noqa: E731
        lambda a_: jnp.sum(jnp.real(causal_resolvent_diag(a_, kappa, z, compensated=comp)) * 1e-3)
    )(a)
    np.testing.assert_allclose(grad(True), grad(False), rtol=1e-2, atol=1e-4 * np.max(np.abs(grad(False))))


def test_compensated_float64():
    """float64 inputs: the double-float step splits at 27 bits and stays exact to rounding."""
    a, kappa, z = _range_inputs(256, seed=5)
    with jax.enable_x64(True):
        args = (a.astype(np.float64), kappa.astype(np.float64), z.astype(np.complex128))
        g = causal_resolvent_diag(*args, impl="sequential", compensated=True)
        assert g.dtype == jnp.complex128
        assert _maxrel(g, np.asarray(_reference(*args))) <= 1e-12


def test_numerical_range_2_20():  # ~8 s on 2 CPU cores: not marked slow
    """The issue's range test: float32, N = 2^20, |a| <= 1e4, kappa <= 1e4, Im z = 1e-3.

    Every impl: finite and |g| <= 1 / Im z everywhere.  Accuracy against a float64 sequential
    reference over ALL positions: compensated meets 1e-4 everywhere (measured ~3e-7).  Plain
    float32 arithmetic does not at a few positions (near resonances the problem's condition
    number is ~1e3: even rounding a - Re z once to float32 costs up to ~5e-5, measured), so
    for the other impls this checks the measured levels (seed 4): sequential and chunked max
    2.0e-4, associative max 1.1e-3; all <= 1e-4 at the 99.9th percentile.
    """
    n = 1 << 20
    a, kappa, z = _range_inputs(n, seed=4)
    ref = _float64_reference(a, kappa, z)
    imz = float(np.imag(z).min())
    variants = {
        "compensated": ({"impl": "sequential", "compensated": True}, 1e-4),
        "sequential": ({"impl": "sequential"}, 1e-3),
        "chunked": ({"impl": "chunked"}, 1e-3),
        "associative": ({"impl": "associative"}, 5e-3),
    }
    for name, (kwargs, max_tol) in variants.items():
        g = np.asarray(causal_resolvent_diag(a, kappa, z, **kwargs))
        assert np.all(np.isfinite(g)), name
        assert np.max(np.abs(g)) * imz <= 1.0 + 1e-5, name
        rel = np.abs(g - ref) / np.abs(ref)
        assert rel.max() <= max_tol, (name, rel.max())
        assert np.quantile(rel, 0.999) <= 1e-4, (name, np.quantile(rel, 0.999))


# ---------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------
def _compiled_bytes(impl, n, batch=(2, 8)):
    a = jax.ShapeDtypeStruct(batch + (n,), jnp.float32)
    z = jax.ShapeDtypeStruct(batch[-1:] + (1,), jnp.complex64)
    ct = jax.ShapeDtypeStruct(batch + (n,), jnp.complex64)

    def fwd_bwd(a_, k_, z_, ct_):
        g, vjp = jax.vjp(lambda *x: causal_resolvent_diag(*x, impl=impl), a_, k_, z_)
        return g, vjp(ct_)

    m = jax.jit(fwd_bwd).lower(a, a, z, ct).compile().memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


@pytest.mark.parametrize("impl", ["sequential", "chunked"])
def test_memory_linear_in_sequence_length(impl):
    """Compiled fwd+bwd memory (arguments + outputs + temporaries) grows linearly: the issue's
    peak(64k) / peak(4k) <= 17.  In all ~7 complex64 arrays of the input's size (measured):
    4 for the arguments and outputs (a, kappa, cotangent; g, abar, kappabar), 3 temporary."""
    small, large = _compiled_bytes(impl, 4096), _compiled_bytes(impl, 65536)
    assert large / small <= 17.0, (small, large)
    assert large <= 8 * 8 * (2 * 8 * 65536), large
