r"""Semiseparable resolvent mixing: apply the whole causal resolvent, not only its diagonal.

For one channel, ``H_{1:i}`` is the leading ``i x i`` block of the symmetric tridiagonal
Hamiltonian with diagonal ``a`` and off-diagonal ``b_k = sqrt(kappa_k)`` between ``k-1`` and
``k`` (as in :mod:`muse_jax.model.bk_core`).  The mixing is

    y_i = sum_{j <= i} [(H_{1:i} - z)^{-1}]_{ij} v_j .                               (1)

Derivation (O(N), ratios only).  With the forward minors ``theta_i = det(H_{1:i} - z)``
(``theta_0 = 1``), Cramer's rule on a tridiagonal matrix gives, for ``j <= i``,

    [(H_{1:i} - z)^{-1}]_{ij} = (-1)^{i-j} (prod_{k=j+1..i} b_k) theta_{j-1} / theta_i .

Put ``u_i = theta_i y_i = sum_{j<=i} (-1)^{i-j} (prod_{k=j+1..i} b_k) theta_{j-1} v_j``; splitting
off ``j = i`` gives ``u_i = theta_{i-1} v_i - b_i u_{i-1}``.  Dividing by ``theta_i`` and using
``g_i = theta_{i-1} / theta_i`` (the causal resolvent diagonal):

    y_i = g_i (v_i - b_i y_{i-1}),      y_0 = 0 .                                    (2)

(2) never forms a minor (the minors over/underflow geometrically in ``i``); it is a first-order
linear recurrence ``y_i = A_i y_{i-1} + B_i`` with ``A_i = -b_i g_i`` and ``B_i = g_i v_i``.
Its partial products are themselves resolvent ratios, ``prod_{k=j+1..i} A_k =
[(H_{1:i}-z)^{-1}]_{ij} / g_j``, bounded by ``|a_j - z| + kappa_j / Im z`` over ``Im z``, so the
associative (parallel) evaluation does not blow up either.  Memory is O(N) per channel.
"""

import functools

import jax
import jax.numpy as jnp

from muse_jax.model import bk_scan
from muse_jax.model.bk_core import IMPLS, causal_resolvent_diag

APPLY_SCANS = ("associative", "sequential")


def apply_scan_for(impl: str) -> str:
    """The scan that evaluates (2) for a `bk_core` impl: `associative` for `associative` (and for
    `auto` off CPU, where that is bk_core's choice too), `lax.scan` otherwise.  `pallas` computes
    g only (its kernels hold the recursion of g, not (2)): its mix takes `auto`'s scan, the
    parallel one on GPU/TPU, `lax.scan` on CPU."""
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; valid impls are {IMPLS}")
    if impl in ("auto", "pallas"):
        impl = bk_scan.auto_impl()
    return "associative" if impl == "associative" else "sequential"


def coupling_amplitude(kappa: jax.Array) -> jax.Array:
    """b_k = sqrt(kappa_k), with b_1 = 0 (position 1 has no left neighbour). Gradient-safe at kappa = 0
    for the ignored first position."""
    first = jnp.arange(kappa.shape[-1]) == 0
    return jnp.where(first, 0.0, jnp.sqrt(jnp.where(first, 1.0, kappa)))


@functools.partial(jax.jit, static_argnames=("impl",))
def causal_resolvent_apply(g: jax.Array, kappa: jax.Array, v: jax.Array, impl: str = "associative") -> jax.Array:
    r"""``y_i = sum_{j<=i} [(H_{1:i} - z)^{-1}]_{ij} v_j`` from the causal diagonal ``g`` by (2).

    Args:
      g: complex ``[..., N]``, the causal resolvent diagonal of the same ``H`` and ``z``.
      kappa: real ``[..., N]`` squared couplings (``kappa[..., 0]`` ignored), ``>= 0``.
      v: real or complex ``[..., N]`` values.
      impl: a `bk_core` impl, mapped by :func:`apply_scan_for` to ``lax.associative_scan``
        or ``lax.scan``.
    Returns complex ``[..., N]`` in ``g``'s dtype. Sequence axis LAST.
    """
    b = coupling_amplitude(kappa).astype(g.dtype)
    coeff = -b * g  # A_i
    drive = g * v.astype(g.dtype)  # B_i
    if apply_scan_for(impl) == "associative":
        _, y = jax.lax.associative_scan(bk_scan.affine_combine, (coeff, drive), axis=g.ndim - 1)
        return y

    def step(y_prev, xs):
        a_i, b_i = xs
        y = a_i * y_prev + b_i
        return y, y

    y0 = jnp.zeros(g.shape[:-1], g.dtype)
    _, ys = jax.lax.scan(step, y0, (jnp.moveaxis(coeff, -1, 0), jnp.moveaxis(drive, -1, 0)))
    return jnp.moveaxis(ys, 0, -1)


def causal_resolvent_mix(a, kappa, z, v, impl: str = "associative") -> tuple[jax.Array, jax.Array]:
    """(g, y): the causal resolvent diagonal and the mixed values (1), both O(N).

    Shapes as :func:`muse_jax.model.bk_core.causal_resolvent_diag`; ``v`` has ``a``'s shape."""
    g = causal_resolvent_diag(a, kappa, z, impl=impl)
    return g, causal_resolvent_apply(g, jnp.asarray(kappa, g.real.dtype), v, impl=impl)


def causal_resolvent_apply_step(y_prev: jax.Array, g: jax.Array, kappa: jax.Array, v: jax.Array) -> jax.Array:
    r"""One step of (2) for incremental generation: ``y_i = g_i (v_i - sqrt(kappa_i) y_{i-1})``.

    No sequence axis: ``y_prev`` (``y_{i-1}``, 0 before the first token, where ``kappa`` is then
    irrelevant), ``g`` (``g_i``), ``kappa``, ``v`` share one shape (e.g. ``[B, C]``).  Returns
    ``y_i`` in ``g``'s dtype; equals :func:`causal_resolvent_apply` at position ``i``.
    """
    b = jnp.sqrt(jnp.maximum(kappa, 0.0)).astype(g.dtype)
    return g * (v.astype(g.dtype) - b * y_prev.astype(g.dtype))
