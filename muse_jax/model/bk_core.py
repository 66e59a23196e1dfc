r"""Birman-Krein style resolvent-diagonal features of a tridiagonal operator.

Setting
-------
``H`` is a real symmetric tridiagonal ``N x N`` matrix with diagonal
``a_1 .. a_N`` and off-diagonal ``b_1 .. b_{N-1}``.  We only ever use the
*squared* couplings

    kappa_i = b_{i-1}^2 >= 0,      i = 2 .. N,

where ``kappa_i`` couples positions ``i-1`` and ``i``.  ``kappa_1`` has no
partner and is ignored everywhere (arrays carry it for shape convenience,
``kappa[..., 0]``).  ``z`` is a complex spectral parameter with ``Im z > 0``.

Causal feature (used by the language model)
-------------------------------------------
    g_i = [(H_{1:i} - z)^{-1}]_{ii},

the last diagonal entry of the resolvent of the leading ``i x i`` block.  By
the Schur complement of the last row/column,

    g_1 = 1 / (a_1 - z),
    g_i = 1 / (a_i - z - kappa_i g_{i-1}),                                (1)

so ``g_i`` depends only on positions ``<= i``.  Each step is a Mobius map; in
homogeneous coordinates ``g_i = p_i / q_i`` with

    [p_i; q_i] = M_i [p_{i-1}; q_{i-1}],
    M_i = [[0, 1], [-kappa_i, a_i - z]],      [p_0; q_0] = [0; 1],

hence with ``P_i = M_i M_{i-1} ... M_1``

    g_i = P_i[0, 1] / P_i[1, 1].                                          (2)

(``q_i = det(H_{1:i} - z)`` are the forward minors ``theta_i`` below and
``p_i = q_{i-1}``.)  Since ``g_i`` is a ratio, every partial product may be
rescaled by any nonzero scalar without changing the result; this is what
keeps the parallel (associative-scan) evaluation of (2) free of
overflow/underflow.

Bound: ``g`` is a diagonal entry of the resolvent of a real symmetric matrix,
``g = sum_k |u_k|^2 / (lambda_k - z)`` with ``sum_k |u_k|^2 = 1``, hence
``Im g > 0`` and ``|g| <= 1 / Im z``.

Implementations (``impl``; documented in :mod:`muse_jax.model.bk_scan`, which also says why
``auto`` picks what it picks): ``auto`` (``sequential`` on CPU, ``associative`` elsewhere),
``chunked``, ``sequential``, ``associative`` (all in bk_scan) and ``pallas`` (Pallas kernels,
:mod:`muse_jax.model.bk_pallas`; in the Pallas interpreter on CPU).  All are pure, jit-able and
differentiable in reverse mode (``jax.grad``) with exact, O(N)-memory gradients;
``associative`` also supports forward mode (``jax.jvp``).  ``compensated=True`` evaluates the
sequential recursion in double-float arithmetic for ~1-ulp outputs at any conditioning.
``bk_step`` (generation) uses plain autodiff.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from muse_jax.model import bk_pallas, bk_scan
from muse_jax.model.bk_scan import IMPLS

__all__ = [
    "IMPLS",
    "causal_resolvent_diag",
    "resolvent_diag",
    "bk_init_state",
    "bk_step",
    "prepare_inputs",
]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def prepare_inputs(a, kappa, z, mask_first=True):
    """Broadcast and cast the inputs; returns real ``(a, kappa)`` ``[..., N]`` and complex
    ``z`` of shape ``a.shape[:-1]``.

    The complex dtype follows the real dtype of ``a``/``kappa``: float32 ->
    complex64, float64 -> complex128.  ``z`` is cast to it.  With ``mask_first``
    ``kappa[..., 0]`` is replaced by 0 (it is ignored by definition; the loop-based
    impls mask it inside their loops instead, saving a pass over kappa).
    """
    a = jnp.asarray(a)
    kappa = jnp.asarray(kappa)
    z = jnp.asarray(z)
    if a.ndim < 1:
        raise ValueError("`a` must have a trailing sequence axis, shape [..., N]")
    if z.ndim >= 1 and z.shape[-1] != 1:
        raise ValueError(
            "`z` must broadcast against a[..., :1] (trailing axis of size 1 or a "
            f"scalar); got z.shape={z.shape} for a.shape={a.shape}"
        )
    real_dtype = jnp.result_type(a, kappa)
    if not jnp.issubdtype(real_dtype, jnp.floating):
        real_dtype = jnp.result_type(float)
    cdtype = jnp.result_type(real_dtype, jnp.complex64)
    shape = jnp.broadcast_shapes(a.shape, kappa.shape, z.shape)
    a = jnp.broadcast_to(a.astype(real_dtype), shape)
    kappa = jnp.broadcast_to(kappa.astype(real_dtype), shape)
    z = jnp.broadcast_to(z.astype(cdtype), shape[:-1] + (1,))[..., 0]
    if mask_first:
        first = jnp.arange(shape[-1]) == 0
        kappa = jnp.where(first, jnp.zeros((), real_dtype), kappa)
    return a, kappa, z


def _check_impl(impl):
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; valid impls are {IMPLS}")


def _resolve(impl, compensated=False):
    """The concrete impl for ``impl`` (``auto`` resolved; compensated needs sequential)."""
    if impl == "auto":
        impl = "sequential" if compensated else bk_scan.auto_impl()
    if compensated and impl != "sequential":
        raise ValueError(f"compensated=True needs impl='sequential' (or 'auto'), got {impl!r}")
    return impl


def _causal(a, kappa, z, impl, unroll, n_chunks, compensated=False):
    """Dispatch on prepared inputs (see :func:`prepare_inputs`; ``impl`` already resolved)."""
    if impl == "associative":
        return bk_scan.associative_g(a.astype(z.dtype) - z[..., None], kappa)
    if impl == "pallas":
        return bk_pallas.pallas_resolvent_prepared(a, kappa, z)
    if impl == "sequential":
        n_chunks = 1
    elif n_chunks is None:
        n_chunks = bk_scan.chunk_count(max(1, a.size // max(a.shape[-1], 1)), a.shape[-1])
    return bk_scan.scan_resolvent(a, kappa, z, n_chunks, unroll, compensated)


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("impl", "unroll", "n_chunks", "compensated"))
def _causal_jit(a, kappa, z, impl, unroll, n_chunks, compensated):
    impl = _resolve(impl, compensated)
    prepared = prepare_inputs(a, kappa, z, mask_first=impl == "associative")
    return _causal(*prepared, impl, unroll, n_chunks, compensated)


def causal_resolvent_diag(
    a,
    kappa,
    z,
    impl: str = "auto",
    unroll: int = 1,
    n_chunks: int | None = None,
    compensated: bool = False,
):
    r"""Causal resolvent diagonal ``g_i = [(H_{1:i} - z)^{-1}]_{ii}``.

    Recursion (Schur complement of the last row/column of ``H_{1:i} - z``)::

        g_1 = 1 / (a_1 - z)
        g_i = 1 / (a_i - z - kappa_i g_{i-1})

    equivalently ``g_i = P_i[0,1] / P_i[1,1]`` with
    ``P_i = M_i ... M_1``, ``M_i = [[0, 1], [-kappa_i, a_i - z]]``.
    ``g_i`` depends only on positions ``<= i`` and ``|g_i| <= 1 / Im z``.

    Args:
      a: real ``[..., N]`` diagonal (sequence axis LAST).
      kappa: real ``[..., N]`` squared couplings, ``kappa[..., i]`` couples
        positions ``i-1`` and ``i`` (0-based); ``kappa[..., 0]`` is ignored.
        Must be ``>= 0`` for the bound above to hold (not checked).
      z: complex, broadcastable against ``a[..., :1]`` (a scalar, or an array
        whose trailing axis has size 1, e.g. ``[C, 1]`` for ``a`` of shape
        ``[B, C, N]``), with ``Im z > 0``.
      impl: ``"auto"`` (per backend, see :func:`muse_jax.model.bk_scan.auto_impl`),
        ``"chunked"`` (loops that advance all chunks of the sequence at once, the chunk
        boundaries fixed exactly), ``"sequential"`` (a loop along the sequence),
        ``"associative"`` (``lax.associative_scan`` over rescaled 2x2 transfer matrices) or
        ``"pallas"`` (the chunked recursion as Pallas kernels, default chunk and block sizes;
        interpreted on CPU). See :mod:`muse_jax.model.bk_scan` and :mod:`muse_jax.model.bk_pallas`.
      unroll: loop unroll factor of the loop-based impls (1 is fastest on CPU).
      n_chunks: ``chunked`` only: number of chunks (default: enough to fill
        ``bk_scan.TARGET_LANES`` vector lanes, see :func:`muse_jax.model.bk_scan.chunk_count`).
      compensated: evaluate the recursion in double-float arithmetic (float32 pairs,
        ~48 significant bits; ``sequential`` only, forward ~3x slower), so that every output
        is within a few ulp of the exact value even where the problem is ill-conditioned
        (near resonances with small ``Im z``: plain float32 reaches ~3e-4 relative error
        there; see tests/test_bk_scan.py).  Gradients stay in working precision.

    Returns:
      complex ``[..., N]`` (complex64 for float32 inputs, complex128 for
      float64 inputs).
    """
    _check_impl(impl)
    n_chunks = None if n_chunks is None else int(n_chunks)
    return _causal_jit(
        a, kappa, z, impl=impl, unroll=int(unroll), n_chunks=n_chunks, compensated=bool(compensated)
    )


def resolvent_diag(a, kappa, z, impl: str = "auto"):
    r"""Full (NON-CAUSAL) resolvent diagonal ``G_ii = [(H - z)^{-1}]_{ii}``.

    WARNING: this is NON-CAUSAL -- ``G_ii`` sees future tokens (positions
    ``> i``).  It is never used by the language model; it is kept only as the
    seed's reference quantity.

    Classical formula (Cramer's rule on the tridiagonal matrix)::

        G_ii = theta_{i-1} phi_{i+1} / theta_N,

    with forward minors ``theta_i = det(H_{1:i} - z)``::

        theta_i = (a_i - z) theta_{i-1} - kappa_i theta_{i-2},
        theta_0 = 1, theta_{-1} = 0,

    and backward minors ``phi_i = det(H_{i:N} - z)``::

        phi_i = (a_i - z) phi_{i+1} - kappa_{i+1} phi_{i+2},
        phi_{N+1} = 1, phi_{N+2} = 0.

    The minors over/underflow geometrically in ``N``, so we evaluate it in
    ratio form instead.  Let

        gf_i = theta_{i-1} / theta_i = [(H_{1:i} - z)^{-1}]_{ii}   (causal g),
        gb_i = phi_{i+1} / phi_i    = [(H_{i:N} - z)^{-1}]_{ii},

    with ``gf_0 = gb_{N+1} = 0``.  Expanding ``theta_N`` along row ``i``
    (three-term Laplace expansion of a tridiagonal determinant)::

        theta_N = (a_i - z) theta_{i-1} phi_{i+1}
                  - kappa_i     theta_{i-2} phi_{i+1}
                  - kappa_{i+1} theta_{i-1} phi_{i+2},

    and dividing by ``theta_{i-1} phi_{i+1}``::

        G_ii = 1 / (a_i - z - kappa_i gf_{i-1} - kappa_{i+1} gb_{i+1}).

    ``gb`` is the causal recursion (1) run on the reversed sequence
    (reversed diagonal, couplings shifted by one so that the reversed
    ``kappa'_j`` couples reversed positions ``j-1, j``).  Because
    ``Im gf, Im gb >= 0`` the denominator has imaginary part ``<= -Im z``, so
    the result is finite and ``|G_ii| <= 1 / Im z``.

    Args/Returns: as :func:`causal_resolvent_diag` (``impl`` selects how the
    two one-sided sweeps are computed).
    """
    _check_impl(impl)
    return _resolvent_jit(a, kappa, z, impl=impl)


@functools.partial(jax.jit, static_argnames=("impl",))
def _resolvent_jit(a, kappa, z, impl):
    impl = _resolve(impl)
    a, kap, z = prepare_inputs(a, kappa, z)
    gf = _causal(a, kap, z, impl, 1, None)
    # Reversed problem: diag a[::-1]; kappa'_j (0-based j >= 1) = kappa[N - j].
    a_rev = jnp.flip(a, axis=-1)
    k_flip = jnp.flip(kap, axis=-1)  # k_flip[j] = kappa[N-1-j]
    k_rev = jnp.concatenate([jnp.zeros_like(k_flip[..., :1]), k_flip[..., :-1]], axis=-1)
    gb = jnp.flip(_causal(a_rev, k_rev, z, impl, 1, None), axis=-1)  # [(H_{i:N}-z)^{-1}]_{ii}
    zc = jnp.zeros_like(gf[..., :1])
    gf_prev = jnp.concatenate([zc, gf[..., :-1]], axis=-1)  # gf_{i-1}, 0 at i=1
    gb_next = jnp.concatenate([gb[..., 1:], zc], axis=-1)  # gb_{i+1}, 0 at i=N
    kap_c = kap.astype(gf.dtype)
    kap_next = jnp.concatenate([kap_c[..., 1:], jnp.zeros_like(kap_c[..., :1])], axis=-1)
    d = a.astype(gf.dtype) - z[..., None]
    return 1.0 / (d - kap_c * gf_prev - kap_next * gb_next)


def bk_init_state(batch_shape: Sequence[int] | int, dtype=jnp.complex64):
    """Initial generation state ``g_0 = 0`` of shape ``batch_shape``."""
    if isinstance(batch_shape, int):
        batch_shape = (batch_shape,)
    return jnp.zeros(tuple(batch_shape), dtype)


@jax.jit
def bk_step(state, a_t, kappa_t, z):
    r"""One step of the causal recursion for incremental generation.

    ``g_t = 1 / (a_t - z - kappa_t g_{t-1})`` with ``state = g_{t-1}``
    (O(1) complex number per channel).  With ``state = 0`` (from
    :func:`bk_init_state`) the first step returns ``1 / (a_1 - z)`` whatever
    (finite) ``kappa_1`` is, matching :func:`causal_resolvent_diag`.

    Shapes have NO sequence axis: ``state``, ``a_t``, ``kappa_t`` are the
    batch shape (e.g. ``[B, C]``) and ``z`` broadcasts against them (for a
    parallel-form ``z`` of shape ``[C, 1]`` pass ``z[..., 0]``).

    Returns ``(new_state, g_t)`` (the same array twice), in ``state.dtype``.
    """
    state = jnp.asarray(state)
    cdtype = state.dtype
    denom = (
        jnp.asarray(a_t).astype(cdtype)
        - jnp.asarray(z).astype(cdtype)
        - jnp.asarray(kappa_t).astype(cdtype) * state
    )
    g = (1.0 / denom).astype(cdtype)
    return g, g
