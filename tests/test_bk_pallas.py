"""Tests for muse_jax.model.bk_pallas: the Pallas kernels (run with interpret=True on CPU) against
the sequential impl and a dense float64 inverse -- values, gradients, chunk and row-block
boundaries, the cross-chunk combination, rescaling, residual size, the Triton lowering -- and
wired in: the language model with model.bk.scan_impl=pallas (bk_core's impl="pallas")."""

from __future__ import annotations

import re

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from muse_jax.model.bk_core import causal_resolvent_diag
from muse_jax.model.bk_pallas import pallas_causal_resolvent
from muse_jax.model.lm import LanguageModel
from muse_jax.settings import ModelSettings


def _inputs(rng, batch, n, imz=(0.05, 1.0)):
    """LAP-range inputs: a ~ N(0, 1), kappa ~ softplus(N(0, 1)), one z per channel (the last
    batch axis; a scalar z for batch = ()), Im z in ``imz``."""
    a = rng.normal(size=batch + (n,)).astype(np.float32)
    kappa = np.logaddexp(0.0, rng.normal(size=batch + (n,))).astype(np.float32)
    zb = batch[-1:] + (1,) if batch else ()
    z = (0.5 * rng.normal(size=zb) + 1j * rng.uniform(*imz, size=zb)).astype(np.complex64)
    return a, kappa, z


def _pallas(chunk, block_rows):
    return lambda a, k, z: pallas_causal_resolvent(a, k, z, chunk=chunk, block_rows=block_rows)


def _sequential(a, k, z):
    return causal_resolvent_diag(a, k, z, impl="sequential")


def _value_and_grads(g_of, args, w):
    def loss(a, k, z):
        g = g_of(a, k, z)
        return jnp.sum(jnp.real(g) * w + jnp.imag(g) ** 2)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(*args)


def _maxrel(x, ref):
    ref = np.asarray(ref)
    return float(np.max(np.abs(np.asarray(x) - ref) / np.abs(ref)))


def _dense_causal(a, kappa, z):
    """float64 numpy: g_i = inv(H[:i, :i] - z)[i-1, i-1], H tridiagonal with off-diagonal
    sqrt(kappa[1:]) (one dense inverse per prefix)."""
    a, kappa = np.asarray(a, np.float64), np.asarray(kappa, np.float64)
    z = np.broadcast_to(np.asarray(z, np.complex128), a.shape[:-1] + (1,))
    n = a.shape[-1]
    out = np.empty(a.shape, np.complex128)
    for idx in np.ndindex(*a.shape[:-1]):
        b = np.sqrt(kappa[idx][1:])
        h = np.diag(a[idx]) + np.diag(b, 1) + np.diag(b, -1) - z[idx][0] * np.eye(n)
        out[idx] = [np.linalg.inv(h[:i, :i])[i - 1, i - 1] for i in range(1, n + 1)]
    return out


# XLA CPU options that halve the compile time of a small model (both impls compiled alike).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

# (batch, N, chunk, block_rows): N never a multiple of the chunk; the last batch axis (the rows
# of a block) below, at and above one block; 3 to 5 chunks.
_CASES = [((3, 5), 37, 16, 8), ((), 100, 32, 8), ((2, 9), 70, 16, 4)]


@pytest.mark.parametrize("case", _CASES, ids=lambda c: f"{c[0]}-N{c[1]}-L{c[2]}-R{c[3]}")
def test_values_and_grads_match_sequential(case):
    batch, n, chunk, block_rows = case
    rng = np.random.default_rng(0)
    args = _inputs(rng, batch, n)
    w = rng.normal(size=batch + (n,)).astype(np.float32)
    g = pallas_causal_resolvent(*args, chunk=chunk, block_rows=block_rows)
    g_ref = _sequential(*args)
    assert g.shape == g_ref.shape and g.dtype == jnp.complex64
    assert _maxrel(g, g_ref) <= 1e-5
    loss, grads = _value_and_grads(_pallas(chunk, block_rows), args, w)
    ref_loss, ref = _value_and_grads(_sequential, args, w)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for name, x, r in zip(("a", "kappa", "z"), grads, ref):
        assert x.shape == r.shape and x.dtype == r.dtype, name
        np.testing.assert_allclose(x, r, rtol=2e-5, atol=2e-6 * np.max(np.abs(r)), err_msg=name)
    assert np.all(np.asarray(grads[1])[..., 0] == 0)  # kappa_1 is ignored


def test_float64_dense_inverse_and_exact_adjoint():
    """float64 inputs (the kernels follow the input dtype): values equal a dense inverse, and
    the VJP equals the sequential impl's to rounding, so the adjoint (chunk summaries, messages,
    kappabar shift, z summed over broadcast rows) is exact, not merely close."""
    rng = np.random.default_rng(1)
    a, kappa, z = _inputs(rng, (2, 3), 20)
    ct = rng.normal(size=a.shape) + 1j * rng.normal(size=a.shape)
    with jax.enable_x64(True):
        args = (a.astype(np.float64), kappa.astype(np.float64), z.astype(np.complex128))
        g, vjp = jax.vjp(_pallas(8, 2), *args)  # 3 chunks, 2 row blocks
        assert g.dtype == jnp.complex128
        np.testing.assert_allclose(np.asarray(g), _dense_causal(*args), rtol=1e-12)
        _, vjp_ref = jax.vjp(_sequential, *args)
        for x, r in zip(vjp(ct), vjp_ref(ct)):
            assert x.dtype == r.dtype and x.shape == r.shape
            r = np.asarray(r)
            np.testing.assert_allclose(np.asarray(x), r, rtol=1e-10, atol=1e-12 * np.max(np.abs(r)))


def test_cross_chunk_combination():
    """Six chunks of 16 at Im z = 0.05 (long memory): restarting every chunk from g = 0 is far
    off (so the test sees the boundaries), the kernels are not; and the loss on the LAST chunk
    alone has a gradient w.r.t. a in the FIRST chunk (only the backward messages carry it)."""
    rng = np.random.default_rng(2)
    a, kappa, z = _inputs(rng, (4,), 96, imz=(0.05, 0.05))
    ref = np.asarray(_sequential(a, kappa, z))
    restarted = _sequential(a.reshape(4, 6, 16), kappa.reshape(4, 6, 16), z[:, None]).reshape(4, 96)
    assert _maxrel(restarted, ref) > 1e-2
    assert _maxrel(pallas_causal_resolvent(a, kappa, z, chunk=16, block_rows=4), ref) <= 1e-5

    w = np.zeros(a.shape, np.float32)
    w[:, -16:] = rng.normal(size=(4, 16))
    _, grads = _value_and_grads(_pallas(16, 4), (a, kappa, z), w)
    _, ref_grads = _value_and_grads(_sequential, (a, kappa, z), w)
    first = np.asarray(ref_grads[0])[:, :16]
    assert np.max(np.abs(first)) > 1e-3 * np.max(np.abs(ref_grads[0]))
    got = np.asarray(grads[0])[:, :16]
    np.testing.assert_allclose(got, first, rtol=1e-4, atol=1e-5 * np.max(np.abs(first)))


def test_wide_range_needs_rescaling():
    """|a| up to 1e3, kappa up to 1e3, Im z = 1e-2: an unscaled chunk product of 64 factors
    (~1e3 each) would overflow float32; the rescaled one gives the sequential accuracy against
    a float64 reference."""
    rng = np.random.default_rng(3)
    n = 256
    a = np.concatenate([rng.normal(size=n // 2), rng.uniform(-1e3, 1e3, n - n // 2)]).astype(np.float32)[None]
    kappa = rng.uniform(0.0, 1e3, (1, n)).astype(np.float32)
    z = np.array([[0.3 + 1e-2j]], np.complex64)
    with jax.enable_x64(True):
        ref = np.asarray(_sequential(a.astype(np.float64), kappa.astype(np.float64), z.astype(np.complex128)))
    g = np.asarray(pallas_causal_resolvent(a, kappa, z, chunk=64, block_rows=1))
    assert np.all(np.isfinite(g)) and np.max(np.abs(g)) * 1e-2 <= 1.0 + 1e-5
    seq_err = _maxrel(_sequential(a, kappa, z), ref)
    assert _maxrel(g, ref) <= max(1e-5, 4 * seq_err), (_maxrel(g, ref), seq_err)


def test_residuals_per_position():
    """The VJP keeps g (re, im) and kappa: 12 bytes per position plus K values per row (target
    <= 40; the associative impl keeps ~37 here)."""
    shape = (2, 8, 64)
    a = np.zeros(shape, np.float32)
    _, vjp = jax.vjp(_pallas(16, 8), a, a + 0.5, np.full((8, 1), 0.1 + 0.5j, np.complex64))
    stored = sum(x.nbytes for x in jax.tree_util.tree_leaves(vjp))
    assert stored / a.size <= 13, stored / a.size


def test_defaults_and_errors():
    """interpret defaults to True on CPU; default chunk/block sizes are capped to the input; a
    scalar z broadcasts over every row (as in prepare_inputs)."""
    a, kappa, _ = _inputs(np.random.default_rng(4), (2, 3), 10)
    z = 0.2 + 0.3j
    assert _maxrel(pallas_causal_resolvent(a, kappa, z), _sequential(a, kappa, z)) <= 1e-5
    with pytest.raises(ValueError, match="power of two"):
        pallas_causal_resolvent(a, kappa, z, chunk=24)


def test_lowers_to_triton():
    """The forward and backward kernels lower for the GPU (Pallas -> Triton IR) even on a CPU-only
    machine: no complex dtype, block shapes powers of two, every op has a Triton rule.  (Not
    compiled or run: that needs a GPU.)"""
    a = jax.ShapeDtypeStruct((2, 300, 1000), jnp.float32)
    z = jax.ShapeDtypeStruct((300, 1), jnp.complex64)

    def loss(a_, k_, z_):
        return jnp.sum(jnp.abs(pallas_causal_resolvent(a_, k_, z_, interpret=False)))

    lowered = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(a, a, z).lower(lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert text.count("__gpu$xla.gpu.triton") == 4
    assert set(re.findall(r'name = "(\w+_kernel)"', text)) == {
        "transfer_kernel",
        "walk_kernel",
        "summary_kernel",
        "adjoint_kernel",
    }


def test_model_with_pallas_equals_sequential(tiny_config):
    """The BK language model with model.bk.scan_impl=pallas against sequential (same weights),
    float32: logits, loss and every parameter's gradient.  N = 300 is two chunks of the default
    256 (the second partial); 6 channels pad a block of 8 rows; every width is set to -4, so
    Im z = lap_eta + softplus(-4) ~ 0.07 (the LAP floor: long memory, the hard end)."""
    tiny_config.model.bk.channels = 6
    tiny_config.model.n_layers = 1  # compile time (interpret mode is slow to compile)
    tokens = jax.random.randint(jax.random.key(0), (2, 301), 0, 97)

    def run(impl):
        tiny_config.model.bk.scan_impl = impl
        model = LanguageModel(ModelSettings.from_config(tiny_config.model), 97, rngs=nnx.Rngs(0))
        width = model.blocks.mixer.width
        width[...] = jnp.full_like(width[...], -4.0)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(p):
            logits = nnx.merge(graphdef, p, rest)(tokens[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean(), logits

        traced = jax.jit(jax.value_and_grad(loss, has_aux=True)).trace(params)
        assert ("pallas_call" in str(traced.jaxpr)) == (impl == "pallas")
        return traced.lower().compile(FAST_COMPILE)(params)

    (loss, logits), grads = run("pallas")
    (ref_loss, ref_logits), ref_grads = run("sequential")
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5 * np.max(np.abs(ref_logits)))
    flat, ref_flat = nnx.to_flat_state(grads), nnx.to_flat_state(ref_grads)
    assert len(flat) == len(ref_flat) > 10
    for (path, x), (_, r) in zip(flat, ref_flat):
        r = np.asarray(r[...])
        np.testing.assert_allclose(x[...], r, rtol=1e-4, atol=1e-5 * np.max(np.abs(r)), err_msg=str(path))
