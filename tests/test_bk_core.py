"""Tests for muse_jax.model.bk_core: every impl against dense float64 references and each other.

Implementation details (chunk boundaries, the custom VJP against plain autodiff, compensated
arithmetic, the 2^20 numerical-range test) are in tests/test_bk_scan.py."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from muse_jax.model import bk_scan
from muse_jax.model.bk_core import (
    IMPLS,
    bk_init_state,
    bk_step,
    causal_resolvent_diag,
    resolvent_diag,
)

# Every concrete implementation, plus the chunked one with a chunk count that does not divide
# the test lengths (padding) -- "chunked:5" means impl="chunked", n_chunks=5.
IMPL_VARIANTS = ("sequential", "chunked", "chunked:5", "associative")
CONCRETE = ("sequential", "chunked", "associative")


def _impl_kwargs(variant):
    impl, _, n = variant.partition(":")
    return {"impl": impl, "n_chunks": int(n) if n else None}


# ---------------------------------------------------------------------------
# dense float64 references
# ---------------------------------------------------------------------------
def _dense_H(a_row, k_row):
    """Symmetric tridiagonal H with diag a and off-diagonal sqrt(kappa[1:])."""
    b = np.sqrt(k_row[1:])
    return np.diag(a_row) + np.diag(b, 1) + np.diag(b, -1)


def _dense_np(a, kappa, z, causal):
    """float64/complex128 numpy. causal: g_i = inv(H[:i,:i] - z I)[i-1, i-1] (one inverse per
    prefix); otherwise diag(inv(H - z I)) (NON-causal)."""
    a = np.asarray(a, np.float64)
    kappa = np.asarray(kappa, np.float64)
    z = np.broadcast_to(np.asarray(z, np.complex128), a.shape[:-1] + (1,))
    n = a.shape[-1]
    out = np.empty(a.shape, np.complex128)
    for idx in np.ndindex(*a.shape[:-1]):
        H = _dense_H(a[idx], kappa[idx]) - z[idx][0] * np.eye(n)
        if causal:
            out[idx] = [np.linalg.inv(H[:i, :i])[i - 1, i - 1] for i in range(1, n + 1)]
        else:
            out[idx] = np.diag(np.linalg.inv(H))
    return out


def _dense_causal_np(a, kappa, z):
    return _dense_np(a, kappa, z, causal=True)


def _dense_full_np(a, kappa, z):
    return _dense_np(a, kappa, z, causal=False)


def _dense_causal_jnp(a, kappa, z):
    """Differentiable dense reference (use under jax.enable_x64).

    Uses the non-symmetric tridiagonal T = diag(a) + superdiag(1) +
    subdiag(kappa[1:]), which is diagonally similar to the symmetric H with
    off-diagonal sqrt(kappa) (same leading minors, same resolvent diagonal)
    but avoids the sqrt (whose derivative is singular at kappa = 0).
    """
    n = a.shape[-1]
    eye = jnp.eye(n, dtype=z.dtype)
    sub = jnp.zeros(a.shape + (n,), a.dtype)
    rows = jnp.arange(1, n)
    sub = sub.at[..., rows, rows - 1].set(kappa[..., 1:])
    T = a[..., :, None] * jnp.eye(n, dtype=a.dtype) + jnp.eye(n, k=1, dtype=a.dtype) + sub
    A = T.astype(z.dtype) - z[..., None] * eye  # z: [..., 1] -> [..., 1, 1]
    # All N prefixes at once: block-diag(A[:i, :i], I) for i = 1..N, whose
    # inverse has inv(A[:i, :i]) as its leading block.
    idx = jnp.arange(n)
    keep = (idx[:, None, None] >= idx[None, :, None]) & (idx[:, None, None] >= idx[None, None, :])
    Ai = jnp.where(keep, A[..., None, :, :], eye)  # [..., N(prefix), N, N]
    inv = jnp.linalg.inv(Ai)
    return inv[..., idx, idx, idx]


def _rand_inputs(rng, batch, n, a_scale=2.0, k_max=2.0, imz=(0.1, 1.0), z_batch=None):
    a = (rng.normal(size=batch + (n,)) * a_scale).astype(np.float32)
    kappa = rng.uniform(0.0, k_max, size=batch + (n,)).astype(np.float32)
    zb = batch if z_batch is None else z_batch
    zr = rng.normal(size=zb + (1,))
    zi = rng.uniform(imz[0], imz[1], size=zb + (1,))
    return a, kappa, zr.astype(np.float32), zi.astype(np.float32)


def _rand_complex_inputs(rng, batch, n, **kwargs):
    """_rand_inputs with z = zr + i zi as one complex64 array: (a, kappa, z)."""
    a, kappa, zr, zi = _rand_inputs(rng, batch, n, **kwargs)
    return a, kappa, (zr + 1j * zi).astype(np.complex64)


def _maxrel(x, ref):
    x = np.asarray(x)
    return float(np.max(np.abs(x - ref) / np.abs(ref)))


def _loss_fn(variant, w1, w2):
    kwargs = _impl_kwargs(variant)

    def loss(a, kappa, zr, zi):
        g = causal_resolvent_diag(a, kappa, zr + 1j * zi, **kwargs)
        return jnp.sum(jnp.real(g * w1) + jnp.imag(g * w2))

    return loss


# shapes: (batch shape of a/kappa, batch shape of z)
_SHAPES = [((), ()), ((4,), (4,)), ((2, 3), (3,))]


# ---------------------------------------------------------------------------
# 1. values vs dense reference
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant", IMPL_VARIANTS)
@pytest.mark.parametrize("shapes", _SHAPES)
def test_matches_dense_reference_float32(variant, shapes):
    batch, zbatch = shapes
    rng = np.random.default_rng(0)
    n = 32
    a, kappa, z = _rand_complex_inputs(rng, batch, n, z_batch=zbatch)
    g = causal_resolvent_diag(a, kappa, z, **_impl_kwargs(variant))
    assert g.shape == batch + (n,)
    assert g.dtype == jnp.complex64
    ref = _dense_causal_np(a, kappa, z)
    assert _maxrel(g, ref) <= 1e-5


@pytest.mark.parametrize("variant", IMPL_VARIANTS)
def test_float64_inputs_give_complex128(variant):
    rng = np.random.default_rng(1)
    a, kappa, zr, zi = _rand_inputs(rng, (3,), 20)
    with jax.enable_x64(True):
        g = causal_resolvent_diag(
            a.astype(np.float64), kappa.astype(np.float64), zr + 1j * zi.astype(np.float64),
            **_impl_kwargs(variant),
        )
        assert g.dtype == jnp.complex128
        assert _maxrel(g, _dense_causal_np(a, kappa, zr + 1j * zi)) <= 1e-11


def test_kappa_first_entry_ignored():
    rng = np.random.default_rng(2)
    a, kappa, zr, zi = _rand_inputs(rng, (2,), 8)
    z = zr + 1j * zi
    for variant in IMPL_VARIANTS:
        kwargs = _impl_kwargs(variant)
        g = np.asarray(causal_resolvent_diag(a, kappa, z, **kwargs))
        for k1 in (123.0, np.inf, np.nan):
            k2 = kappa.copy()
            k2[..., 0] = k1
            np.testing.assert_array_equal(np.asarray(causal_resolvent_diag(a, k2, z, **kwargs)), g)


# ---------------------------------------------------------------------------
# 2. gradients vs dense reference
# ---------------------------------------------------------------------------
_GRAD_BATCH, _GRAD_N = (2, 3), 12


@functools.lru_cache(maxsize=None)
def _grad_problem():
    """Inputs, loss weights and the dense float64 reference gradients."""
    rng = np.random.default_rng(3)
    batch, n = _GRAD_BATCH, _GRAD_N
    a, kappa, zr, zi = _rand_inputs(rng, batch, n, z_batch=(3,))
    w1 = rng.normal(size=batch + (n,)).astype(np.float32)
    w2 = rng.normal(size=batch + (n,)).astype(np.float32)
    assert hasattr(jax, "enable_x64")
    with jax.enable_x64(True):
        args64 = [jnp.asarray(x, jnp.float64) for x in (a, kappa, zr, zi)]
        w1_64, w2_64 = jnp.asarray(w1, jnp.float64), jnp.asarray(w2, jnp.float64)

        def ref_loss(a_, k_, zr_, zi_):
            g = _dense_causal_jnp(a_, k_, zr_ + 1j * zi_)
            return jnp.sum(jnp.real(g * w1_64) + jnp.imag(g * w2_64))

        ref = jax.jit(jax.grad(ref_loss, argnums=(0, 1, 2, 3)))(*args64)
        ref = tuple(np.asarray(x) for x in ref)
        assert all(x.dtype == np.float64 for x in ref)
    return (a, kappa, zr, zi), (w1, w2), ref


@pytest.mark.parametrize("variant", IMPL_VARIANTS)
def test_gradients_match_dense_reference(variant):
    args, (w1, w2), ref = _grad_problem()
    grads32 = jax.jit(jax.grad(_loss_fn(variant, w1, w2), argnums=(0, 1, 2, 3)))(*args)
    with jax.enable_x64(True):
        args64 = [jnp.asarray(x, jnp.float64) for x in args]
        w64 = [jnp.asarray(w, jnp.float64) for w in (w1, w2)]
        # Our implementation in float64: must match to near machine precision.
        ours64 = jax.jit(jax.grad(_loss_fn(variant, *w64), argnums=(0, 1, 2, 3)))(*args64)
        ours64 = [np.asarray(x) for x in ours64]
        assert ours64[0].dtype == np.float64

    names = ("a", "kappa", "Re z", "Im z")
    for name, g32, g64, r in zip(names, grads32, ours64, ref):
        g32 = np.asarray(g32)
        assert g32.dtype == np.float32 and g32.shape == r.shape, name
        assert np.all(np.isfinite(g32)), name
        scale = np.max(np.abs(r))
        assert scale > 0, name
        np.testing.assert_allclose(g64, r, rtol=1e-9, atol=1e-9 * scale, err_msg=name)
        np.testing.assert_allclose(g32, r, rtol=1e-4, atol=1e-5 * scale, err_msg=name)
    # kappa[..., 0] is ignored -> zero gradient.
    assert np.all(np.asarray(grads32[1])[..., 0] == 0)


def test_forward_mode_jvp():
    """jax.jvp: supported by associative (custom JVP), equal to the plain-autodiff reference;
    the loop-based impls have a custom VJP and refuse forward mode with JAX's TypeError."""
    rng = np.random.default_rng(10)
    a, kappa, z = _rand_complex_inputs(rng, (3,), 16)
    ta = rng.normal(size=a.shape).astype(np.float32)
    tk = rng.normal(size=a.shape).astype(np.float32)

    def reference(a_, k_):
        k_ = jnp.where(jnp.arange(a_.shape[-1]) == 0, 0.0, k_)
        return bk_scan.sequential_autodiff(a_.astype(jnp.complex64) - z, k_)

    ref = [np.asarray(x) for x in jax.jvp(reference, (a, kappa), (ta, tk))]
    f = lambda a_, k_: causal_resolvent_diag(a_, k_, z, impl="associative")  # noqa: E731
    out = [np.asarray(x) for x in jax.jvp(f, (a, kappa), (ta, tk))]
    for x, y in zip(out, ref):
        assert _maxrel(x, y) <= 1e-5
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda a_: causal_resolvent_diag(a_, kappa, z, impl="sequential"), (a,), (ta,))


# ---------------------------------------------------------------------------
# 3. causality
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant", IMPL_VARIANTS)
def test_causality_exact(variant):
    rng = np.random.default_rng(4)
    batch, n = (2, 3), 40
    a, kappa, z = _rand_complex_inputs(rng, batch, n, z_batch=(3,))
    kwargs = _impl_kwargs(variant)
    f = jax.jit(lambda a_, k_: causal_resolvent_diag(a_, k_, z, **kwargs))
    g = np.asarray(f(a, kappa))
    for t in (0, 1, 7, 16, 31, n - 2):
        a2, k2 = a.copy(), kappa.copy()
        a2[..., t + 1 :] += rng.normal(size=a2[..., t + 1 :].shape).astype(np.float32) * 50
        k2[..., t + 1 :] = rng.uniform(0, 100, size=k2[..., t + 1 :].shape).astype(np.float32)
        g2 = np.asarray(f(a2, k2))
        np.testing.assert_array_equal(g2[..., : t + 1], g[..., : t + 1])
        # The perturbation must actually be visible at the next position.
        assert np.all(g2[..., t + 1] != g[..., t + 1])


# ---------------------------------------------------------------------------
# 4. |g| <= 1 / Im z, finite, on random and extreme inputs
# ---------------------------------------------------------------------------
def _extreme_cases():
    rng = np.random.default_rng(5)
    n, batch = 256, (4,)
    cases = []
    a, k, z = _rand_complex_inputs(rng, batch, n)
    cases.append(("random", a, k, z))
    zext = (rng.normal(size=batch + (1,)) * 100 + 1e-3j).astype(np.complex64)
    a = rng.uniform(-1e4, 1e4, size=batch + (n,)).astype(np.float32)
    k = rng.uniform(0, 1e4, size=batch + (n,)).astype(np.float32)
    cases.append(("huge a, huge kappa", a, k, zext))
    a = rng.normal(size=batch + (n,)).astype(np.float32)
    cases.append(("small a, huge kappa", a, k, zext))
    a = np.zeros(batch + (n,), np.float32)
    k = np.full(batch + (n,), 1e4, np.float32)
    zres = np.array([0.0, 50.0, 199.9, 1e4], np.float32)[:, None] + 1e-3j
    cases.append(("resonant", a, k, zres.astype(np.complex64)))
    a = np.full(batch + (n,), 1e4, np.float32)
    zres = np.full(batch + (1,), 1e4 + 1e-3j, np.complex64)
    cases.append(("a = 1e4 = Re z, kappa = 0", a, np.zeros_like(a), zres))
    return cases


@pytest.mark.parametrize("variant", IMPL_VARIANTS + ("sequential:compensated",))
def test_bound_and_finite(variant):
    kwargs = {"impl": "sequential", "compensated": True} if "compensated" in variant else _impl_kwargs(variant)
    for name, a, k, z in _extreme_cases():
        g = np.asarray(causal_resolvent_diag(a, k, z, **kwargs))
        assert np.all(np.isfinite(g)), name
        imz = np.imag(np.broadcast_to(z, a.shape[:-1] + (1,)))
        assert np.all(np.abs(g) * imz <= 1.0 + 1e-4), (name, np.max(np.abs(g) * imz))
    # the last case sits exactly on resonance (kappa = 0): |g_i| = 1 / Im z
    np.testing.assert_allclose(np.abs(g) * imz, 1.0, rtol=1e-4)


# ---------------------------------------------------------------------------
# 5. bk_step (generation) equals the parallel form
# ---------------------------------------------------------------------------
def test_bk_step_matches_parallel():
    rng = np.random.default_rng(6)
    B, C, n = 2, 3, 24
    a, kappa, z = _rand_complex_inputs(rng, (B, C), n, z_batch=(C,))  # z: [C, 1]
    par = {impl: np.asarray(causal_resolvent_diag(a, kappa, z, impl=impl)) for impl in CONCRETE}

    state = bk_init_state((B, C))
    assert state.shape == (B, C) and state.dtype == jnp.complex64
    assert np.all(np.asarray(state) == 0)
    step = jax.jit(bk_step)
    outs = []
    for t in range(n):
        state, g_t = step(state, a[..., t], kappa[..., t], z[..., 0])
        assert g_t.shape == (B, C)
        np.testing.assert_array_equal(np.asarray(state), np.asarray(g_t))
        outs.append(np.asarray(g_t))
    seq = np.stack(outs, axis=-1)
    for impl in CONCRETE:
        assert _maxrel(seq, par[impl]) <= 2e-6, impl


def test_bk_step_first_step_ignores_kappa():
    a1 = np.float32(0.7)
    z = np.complex64(0.2 + 0.3j)
    for k1 in (0.0, 5.0, 1e6):
        _, g1 = bk_step(bk_init_state(()), a1, np.float32(k1), z)
        np.testing.assert_allclose(np.asarray(g1), 1.0 / (0.7 - (0.2 + 0.3j)), rtol=1e-6)


# ---------------------------------------------------------------------------
# 6. impls agree at N = 4096 (values and gradients), with each other and with plain autodiff
# ---------------------------------------------------------------------------
def test_impls_agree_long_sequence():
    rng = np.random.default_rng(7)
    batch, n = (2,), 4096
    a = rng.normal(size=batch + (n,)).astype(np.float32)
    kappa = rng.uniform(0, 1, size=batch + (n,)).astype(np.float32)
    zr = rng.normal(size=batch + (1,)).astype(np.float32)
    zi = rng.uniform(0.4, 0.6, size=batch + (1,)).astype(np.float32)
    w1 = rng.normal(size=batch + (n,)).astype(np.float32)
    w2 = rng.normal(size=batch + (n,)).astype(np.float32)

    def run(g_of):
        def loss_and_g(a_, k_, zr_, zi_):
            g = g_of(a_, k_, zr_ + 1j * zi_)
            return jnp.sum(jnp.real(g * w1) + jnp.imag(g * w2)), g

        grads, g = jax.jit(jax.grad(loss_and_g, argnums=(0, 1, 2, 3), has_aux=True))(a, kappa, zr, zi)
        return np.asarray(g), [np.asarray(x) for x in grads]

    def autodiff(a_, k_, z_):  # plain autodiff through lax.scan: the reference
        k_ = jnp.where(jnp.arange(n) == 0, 0.0, k_)
        return bk_scan.sequential_autodiff(a_.astype(jnp.complex64) - z_, k_)

    res = {"autodiff": run(autodiff)}
    for variant in ("sequential", "chunked", "chunked:7", "associative"):
        kwargs = _impl_kwargs(variant)
        res[variant] = run(lambda a_, k_, z_, kw=kwargs: causal_resolvent_diag(a_, k_, z_, **kw))
    g_ref, grads_ref = res.pop("autodiff")
    for variant, (g, grads) in res.items():
        assert np.all(np.isfinite(g)), variant
        assert _maxrel(g, g_ref) <= 1e-5, variant
        for name, x, r in zip(("a", "kappa", "Re z", "Im z"), grads, grads_ref):
            assert np.all(np.isfinite(x)), (variant, name)
            np.testing.assert_allclose(x, r, rtol=1e-4, atol=1e-5 * np.max(np.abs(r)), err_msg=f"{variant} {name}")


# ---------------------------------------------------------------------------
# 7. non-causal full resolvent diagonal
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("impl", CONCRETE)
def test_resolvent_diag_matches_dense(impl):
    rng = np.random.default_rng(8)
    batch, n = (2, 3), 24
    a, kappa, z = _rand_complex_inputs(rng, batch, n, z_batch=(3,))
    G = np.asarray(resolvent_diag(a, kappa, z, impl=impl))
    assert G.shape == batch + (n,) and G.dtype == np.complex64
    ref = _dense_full_np(a, kappa, z)
    assert _maxrel(G, ref) <= 1e-5
    # Last position coincides with the causal feature; earlier ones do not.
    g = np.asarray(causal_resolvent_diag(a, kappa, z, impl=impl))
    np.testing.assert_allclose(G[..., -1], g[..., -1], rtol=1e-5)
    assert np.all(np.abs(G[..., :-1] - g[..., :-1]) > 1e-6)


def test_resolvent_diag_float64():
    rng = np.random.default_rng(9)
    a, kappa, zr, zi = _rand_inputs(rng, (2,), 24)
    with jax.enable_x64(True):
        G = resolvent_diag(
            a.astype(np.float64), kappa.astype(np.float64), zr + 1j * zi.astype(np.float64)
        )
        assert G.dtype == jnp.complex128
        assert _maxrel(G, _dense_full_np(a, kappa, zr + 1j * zi)) <= 1e-11


# ---------------------------------------------------------------------------
# 8. errors
# ---------------------------------------------------------------------------
def test_unknown_impl_raises():
    a = np.zeros((4,), np.float32)
    with pytest.raises(ValueError, match="auto.*chunked.*sequential.*associative"):
        causal_resolvent_diag(a, a, 1j, impl="fft")
    with pytest.raises(ValueError, match="auto.*chunked.*sequential.*associative"):
        resolvent_diag(a, a, 1j, impl="fft")
    with pytest.raises(ValueError, match="compensated"):
        causal_resolvent_diag(a, a, 1j, impl="associative", compensated=True)


def test_auto_resolves_per_backend():
    assert IMPLS == ("auto", "chunked", "sequential", "associative", "pallas")
    assert bk_scan.auto_impl("cpu") == "sequential"
    assert bk_scan.auto_impl("gpu") == bk_scan.auto_impl("tpu") == "associative"
    rng = np.random.default_rng(11)
    a, kappa, z = _rand_complex_inputs(rng, (2, 3), 40, z_batch=(3,))
    chosen = bk_scan.auto_impl()
    np.testing.assert_array_equal(
        np.asarray(causal_resolvent_diag(a, kappa, z)), np.asarray(causal_resolvent_diag(a, kappa, z, impl=chosen))
    )


def test_bad_z_shape_raises():
    a = np.zeros((2, 3, 8), np.float32)
    with pytest.raises(ValueError):
        causal_resolvent_diag(a, a, np.full((3,), 1j, np.complex64))
