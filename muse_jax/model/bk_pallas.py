r"""The causal resolvent recursion as Pallas kernels: values and gradient, two-level chunked.

The recursion (:mod:`muse_jax.model.bk_core`, :mod:`muse_jax.model.bk_scan`), ``d_i = a_i - z``,

    g_1 = 1 / d_1,      g_i = 1 / (d_i - kappa_i g_{i-1}),                                (1)

is one Mobius map per position, ``g_i = p_i / q_i`` with ``[p_i; q_i] = M_i [p_{i-1}; q_{i-1}]``,
``M_i = [[0, 1], [-kappa_i, d_i]]``, ``[p_0; q_0] = [0; 1]``.

Layout.  Inputs ``[..., N]`` are viewed as ``[P, N, C]`` (``C`` the last batch axis, e.g. the
model's resolvent channels, minor), as in bk_scan: the model holds ``[B, N, C]`` and passes
``[B, C, N]``, so the two transposes cancel.  ``N`` is padded to ``K`` chunks of ``L``
positions and ``C`` to blocks of ``R`` rows (``L``, ``R`` powers of two).  Program
``(p, c, k)`` of every kernel owns rows ``c R .. c R + R - 1`` of batch ``p`` and positions
``k L .. k L + L - 1``; a ``fori_loop`` walks its ``L`` positions, loading one contiguous
``[R]`` vector of each input per step and keeping the recursion state in registers.  Complex
numbers are (re, im) pairs of real arrays (no complex dtype inside a kernel).

Forward (three passes; only the chunk boundaries cross programs):
  1. :func:`_transfer_kernel`: each chunk's transfer product ``T_k = M_{kL+L} ... M_{kL+1}``,
     rescaled by a power of two after every step (:func:`_transfer_step`);
  2. in JAX, ``lax.associative_scan`` over the ``K`` chunk products (rescaled 2x2 products,
     ``bk_scan.mat_combine``) gives each chunk's incoming ``g`` (``Q01 / Q11`` of the prefix);
  3. :func:`_walk_kernel`: (1) itself through each chunk from its incoming ``g``; writes ``g``.
The values are those of (1); the matrix products only supply the ``K`` boundary values.

Backward: the adjoint of (1) (derived in bk_scan), with ``w`` the cotangent of ``g``,

    lambda_i = w_i + kappa_{i+1} g_{i+1}^2 lambda_{i+1},   lambda_{N+1} = 0,   m_i = lambda_i g_i^2,
    abar_i = -Re m_i,    kappabar_i = Re(m_i g_{i-1}),    zbar = sum_i m_i,              (2)

is linear in ``w``: in messages ``c_i = kappa_i m_i`` a chunk maps the message entering at its
last position to the one leaving its first as ``c_out = c0 + Pi c_in`` (affine), so
  1. :func:`_summary_kernel`: each chunk's ``(c0, Pi)`` by a reverse walk;
  2. in JAX, a reverse ``associative_scan`` of the affine maps (``bk_scan.affine_combine``)
     gives the message entering each chunk;
  3. :func:`_adjoint_kernel`: (2) through each chunk from that message; writes ``abar``,
     ``kappabar`` and per-chunk partial sums of ``zbar``.
Residuals: ``g`` (re, im) and ``kappa`` in kernel layout (12 bytes per position for float32)
plus ``K`` incoming values per row.

The model uses it with ``model.bk.scan_impl = pallas`` (bk_core's ``impl="pallas"`` calls
:func:`pallas_resolvent_prepared`); ``auto`` never picks it (see ``bk_scan.auto_impl``).
Tested on CPU with ``interpret=True`` (tests/test_bk_pallas.py); block shapes, dtypes and ops
are chosen for the Triton (GPU) lowering but were not run on a GPU in this work.  Under a
multi-device mesh XLA's SPMD partitioner has no rule for the kernels' custom calls (it
replicates their operands): a sharded run should wrap them in ``shard_map`` (not tried).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from muse_jax.model import bk_scan

__all__ = ["pallas_causal_resolvent", "pallas_resolvent_prepared"]

CHUNK = 256  # positions per program (L); default, not tuned on a GPU
BLOCK_ROWS = 128  # rows per program (R); one row per thread at 4 warps


# ---------------------------------------------------------------------------
# kernel math: complex numbers as (re, im) pairs of real arrays
# ---------------------------------------------------------------------------
def _cmul(x, y):
    """(x0 + i x1)(y0 + i y1)."""
    return x[0] * y[0] - x[1] * y[1], x[0] * y[1] + x[1] * y[0]


def _recip(x):
    """1 / x = conj(x) / |x|^2  (|x| >= Im z > 0 wherever it is used)."""
    s = 1.0 / (x[0] * x[0] + x[1] * x[1])
    return x[0] * s, -x[1] * s


def _resolvent_step(g, a, kap, z):
    """Recursion (1): ``g_i = 1 / (a_i - z - kappa_i g_{i-1})``."""
    return _recip((a - z[0] - kap * g[0], -z[1] - kap * g[1]))


def _inv_pow2(s):
    """``2^-e`` with ``s 2^-e`` in [1, 2), for finite ``s`` in [0, 2^(emax-1)), by bit
    arithmetic on the exponent field (exact; no frexp/ldexp in the Triton lowering).  The
    exponent field of the result is ``2 bias - E`` for ``s``'s field ``E`` (``s = 0``: 2^bias)."""
    info = jnp.finfo(s.dtype)
    itype = jnp.int32 if s.dtype == jnp.float32 else jnp.int64
    nmant, bias = info.nmant, info.maxexp - 1
    mask = ((1 << info.nexp) - 1) << nmant
    field = jax.lax.bitcast_convert_type(s, itype) & mask
    return jax.lax.bitcast_convert_type(jnp.asarray((2 * bias) << nmant, itype) - field, s.dtype)


def _transfer_step(rows, a, kap, z):
    """One factor of the chunk product, ``T <- M_i T`` with ``M_i = [[0, 1], [-kappa_i, d_i]]``:
    the new first row is the old second one, the new second row ``d_i row1 - kappa_i row0``.
    ``rows = (t00, t01, t10, t11)`` (complex pairs).  Then every entry is scaled by one exact
    power of two so that the largest ``|Re|``, ``|Im|`` lies in [1, 2): the readout
    ``g = (t00 g_in + t01) / (t10 g_in + t11)`` is a ratio, unchanged by a common scale."""
    t00, t01, t10, t11 = rows
    d = (a - z[0], -z[1])
    n10 = tuple(x - kap * y for x, y in zip(_cmul(d, t10), t00))
    n11 = tuple(x - kap * y for x, y in zip(_cmul(d, t11), t01))
    out = (t10, t11, n10, n11)
    s = functools.reduce(jnp.maximum, [jnp.abs(x) for t in out for x in t])
    f = _inv_pow2(s)
    return tuple((t[0] * f, t[1] * f) for t in out)


def _adjoint_step(c, w, g, kap):
    """Adjoint (2) at one position: ``m_i = (w_i + c_{i+1}) g_i^2`` and the message to the
    previous position ``c_i = kappa_i m_i``; returns ``(m_i, c_i)``."""
    m = _cmul((w[0] + c[0], w[1] + c[1]), _cmul(g, g))
    return m, (kap * m[0], kap * m[1])


# ---------------------------------------------------------------------------
# kernels (refs: [L, R] per-position blocks, [R] per-row, [S, R] per-chunk stacks)
# ---------------------------------------------------------------------------
def _transfer_kernel(z_ref, a_ref, k_ref, t_ref):
    """Forward pass 1: the chunk's rescaled transfer product ``T`` into ``t_ref`` [8, R]
    (re, im of t00, t01, t10, t11)."""
    z = (z_ref[0, :], z_ref[1, :])
    one, zero = jnp.ones_like(z[0]), jnp.zeros_like(z[0])

    def body(l, rows):
        return _transfer_step(rows, a_ref[l, :], k_ref[l, :], z)

    rows = jax.lax.fori_loop(0, a_ref.shape[0], body, ((one, zero), (zero, zero), (zero, zero), (one, zero)))
    for j, x in enumerate(x for t in rows for x in t):
        t_ref[j, :] = x


def _walk_kernel(z_ref, gin_ref, a_ref, k_ref, gr_ref, gi_ref):
    """Forward pass 3: recursion (1) from the chunk's incoming ``g`` (``gin_ref`` [2, R])."""
    z = (z_ref[0, :], z_ref[1, :])

    def body(l, g):
        g = _resolvent_step(g, a_ref[l, :], k_ref[l, :], z)
        gr_ref[l, :] = g[0]
        gi_ref[l, :] = g[1]
        return g

    jax.lax.fori_loop(0, a_ref.shape[0], body, (gin_ref[0, :], gin_ref[1, :]))


def _summary_kernel(gr_ref, gi_ref, k_ref, wr_ref, wi_ref, s_ref):
    """Backward pass 1: the chunk's affine message map ``c_out = c0 + Pi c_in`` into
    ``s_ref`` [4, R] (re, im of c0, Pi), by a reverse walk of ``alpha_i = kappa_i g_i^2``,
    ``c <- alpha_i (w_i + c)``, ``Pi <- alpha_i Pi``."""
    last = gr_ref.shape[0] - 1

    def body(i, carry):
        c, prod = carry
        l = last - i
        g = (gr_ref[l, :], gi_ref[l, :])
        g2, kap = _cmul(g, g), k_ref[l, :]
        alpha = (kap * g2[0], kap * g2[1])
        return _cmul(alpha, (wr_ref[l, :] + c[0], wi_ref[l, :] + c[1])), _cmul(alpha, prod)

    zero = jnp.zeros_like(k_ref[0, :])
    c, prod = jax.lax.fori_loop(0, last + 1, body, ((zero, zero), (zero + 1.0, zero)))
    for j, x in enumerate((*c, *prod)):
        s_ref[j, :] = x


def _adjoint_kernel(gin_ref, cin_ref, gr_ref, gi_ref, k_ref, wr_ref, wi_ref, ar_ref, kr_ref, zs_ref):
    """Backward pass 3: (2) through the chunk from the message ``cin_ref`` [2, R] entering at
    its last position; ``g_{i-1}`` at the first position is the incoming ``gin_ref`` [2, R].
    Writes ``abar``, ``kappabar`` and this chunk's ``sum m`` into ``zs_ref`` [2, R].  Each step
    loads ``g_{l-1}`` only (``g_l`` is the previous step's)."""
    last = gr_ref.shape[0] - 1

    def body(i, carry):
        c, g, zsum = carry
        l = last - i
        lp = jnp.maximum(l - 1, 0)
        first = l == 0
        g_prev = (
            jnp.where(first, gin_ref[0, :], gr_ref[lp, :]),
            jnp.where(first, gin_ref[1, :], gi_ref[lp, :]),
        )
        m, c = _adjoint_step(c, (wr_ref[l, :], wi_ref[l, :]), g, k_ref[l, :])
        ar_ref[l, :] = -m[0]
        kr_ref[l, :] = m[0] * g_prev[0] - m[1] * g_prev[1]
        return c, g_prev, (zsum[0] + m[0], zsum[1] + m[1])

    zero = jnp.zeros_like(k_ref[0, :])
    init = ((cin_ref[0, :], cin_ref[1, :]), (gr_ref[last, :], gi_ref[last, :]), (zero, zero))
    zsum = jax.lax.fori_loop(0, last + 1, body, init)[2]
    zs_ref[0, :] = zsum[0]
    zs_ref[1, :] = zsum[1]


# ---------------------------------------------------------------------------
# pallas_call plumbing: grid (P, C / R, K)
# ---------------------------------------------------------------------------
class _Geometry:
    """Kernel layout of ``shape = [..., N]``: P batch rows, C minor rows padded to Cp (blocks
    of R), N positions padded to K chunks of L; plus the interpret flag."""

    def __init__(self, shape, chunk, block_rows, interpret):
        batch = shape[:-1]
        self.shape = shape
        self.p, self.c = (math.prod(batch[:-1]), batch[-1]) if batch else (1, 1)
        self.n = shape[-1]
        self.l = min(chunk, pl.next_power_of_2(max(self.n, 1)))
        self.r = min(block_rows, pl.next_power_of_2(self.c))
        self.k = pl.cdiv(self.n, self.l)
        self.cp = pl.cdiv(self.c, self.r) * self.r
        self.interpret = interpret

    def to_kernel(self, x):
        """[..., N] -> [P, K L, Cp], zero-padded (a = kappa = 0 and w = 0 there: finite g, and
        no adjoint message leaves a padded position)."""
        x = jnp.swapaxes(x.reshape(self.p, self.c, self.n), 1, 2)
        return jnp.pad(x, ((0, 0), (0, self.k * self.l - self.n), (0, self.cp - self.c)))

    def from_kernel(self, x):
        """[P, K L, Cp] -> [..., N]; inverse of :meth:`to_kernel`."""
        return jnp.swapaxes(x[:, : self.n, : self.c], 1, 2).reshape(self.shape)

    def rows(self, x, fill):
        """Per-row complex ``x`` of the batch shape -> [P, 2, Cp] (re, im)."""
        x = jnp.pad(x.reshape(self.p, self.c), ((0, 0), (0, self.cp - self.c)), constant_values=fill)
        return jnp.stack((jnp.real(x), jnp.imag(x)), axis=1)

    def spec(self, kind, s=0):
        """BlockSpec of a ``"pos"`` [P, K L, Cp], ``"row"`` [P, s, Cp] or ``"chunk"``
        [P, K, s, Cp] array (``s``: stacked real components)."""
        if kind == "pos":
            return pl.BlockSpec((None, self.l, self.r), lambda p, c, k: (p, k, c))
        if kind == "row":
            return pl.BlockSpec((None, s, self.r), lambda p, c, k: (p, 0, c))
        return pl.BlockSpec((None, None, s, self.r), lambda p, c, k: (p, k, 0, c))

    def shape_of(self, kind, dtype, s=0):
        dims = {"pos": (self.p, self.k * self.l, self.cp), "chunk": (self.p, self.k, s, self.cp)}[kind]
        return jax.ShapeDtypeStruct(dims, dtype)

    def call(self, kernel, ins, outs, args):
        """``pl.pallas_call`` of ``kernel`` with in/out specs ``(kind, s)`` over the grid."""
        out_shape = [self.shape_of(kind, args[-1].dtype, s) for kind, s in outs]
        return pl.pallas_call(
            kernel,
            out_shape=out_shape,
            grid=(self.p, self.cp // self.r, self.k),
            in_specs=[self.spec(kind, s) for kind, s in ins],
            out_specs=[self.spec(kind, s) for kind, s in outs],
            interpret=self.interpret,
            compiler_params=plgpu.CompilerParams(num_warps=max(1, min(4, self.r // 32))),
            name=kernel.__name__.strip("_"),
        )(*args)


def _from_stack(x):
    """[P, K, 2, Cp] (re, im) -> complex [P, K, Cp]."""
    return jax.lax.complex(x[:, :, 0], x[:, :, 1])


def _to_stack(x):
    return jnp.stack((jnp.real(x), jnp.imag(x)), axis=2)


def _incoming_g(t):
    """Forward pass 2: ``t`` [P, K, 8, Cp] chunk products -> ``g`` entering each chunk as
    [P, K, 2, Cp]: ``Q_k = T_k ... T_0`` by an associative scan, ``g_end_k = Q_k[0,1] / Q_k[1,1]``
    (``Q_k [0; 1]``), ``g_in_0 = 0``, ``g_in_k = g_end_{k-1}``."""
    mats = jnp.stack([jax.lax.complex(t[:, :, 2 * j], t[:, :, 2 * j + 1]) for j in range(4)])
    prefix = jax.lax.associative_scan(bk_scan.mat_combine, mats, axis=2)
    g_end = prefix[1] / prefix[3]
    return _to_stack(jnp.concatenate([jnp.zeros_like(g_end[:, :1]), g_end[:, :-1]], axis=1))


def _incoming_messages(s):
    """Backward pass 2: ``s`` [P, K, 4, Cp] chunk maps ``F_k(c) = c0_k + Pi_k c`` -> the
    message entering each chunk from the next, [P, K, 2, Cp]: ``c_in_{K-1} = 0``,
    ``c_in_k = F_{k+1}(c_in_{k+1})``, by an associative scan of the maps in reverse order."""
    c0 = jnp.flip(jax.lax.complex(s[:, :, 0], s[:, :, 1]), axis=1)
    pi = jnp.flip(jax.lax.complex(s[:, :, 2], s[:, :, 3]), axis=1)
    _, out = jax.lax.associative_scan(bk_scan.affine_combine, (pi, c0), axis=1)
    out = jnp.flip(out, axis=1)  # out_k = F_k(F_{k+1}(... F_{K-1}(0)))
    return _to_stack(jnp.concatenate([out[:, 1:], jnp.zeros_like(out[:, :1])], axis=1))


# ---------------------------------------------------------------------------
# the custom-VJP'd function
# ---------------------------------------------------------------------------
@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _pallas_g(a, kappa, z, chunk, block_rows, interpret):
    return _pallas_g_fwd(a, kappa, z, chunk, block_rows, interpret)[0]


def _pallas_g_fwd(a, kappa, z, chunk, block_rows, interpret):
    geo = _Geometry(a.shape, chunk, block_rows, interpret)
    a_k = geo.to_kernel(a)
    k_k = geo.to_kernel(kappa).at[:, 0].set(0.0)  # kappa_1 couples to nothing (masked here, not
    # in prepare_inputs: a masked input would add a residual of its own to the VJP)
    z_k = geo.rows(z, 1j)  # padded rows get z = i: finite, discarded
    t = geo.call(_transfer_kernel, [("row", 2), ("pos", 0), ("pos", 0)], [("chunk", 8)], (z_k, a_k, k_k))[0]
    g_in = _incoming_g(t)
    ins = [("row", 2), ("chunk", 2), ("pos", 0), ("pos", 0)]
    g_re, g_im = geo.call(_walk_kernel, ins, [("pos", 0), ("pos", 0)], (z_k, g_in, a_k, k_k))
    g = jax.lax.complex(geo.from_kernel(g_re), geo.from_kernel(g_im))
    return g, (g_re, g_im, k_k, g_in)


def _pallas_g_bwd(chunk, block_rows, interpret, res, ct):
    """JAX's cotangent ``ct`` of complex ``g`` stands for ``dL = Re sum ct dg``; returns
    ``(abar, kappabar, zbar)`` of (2) with ``w = ct``."""
    g_re, g_im, k_k, g_in = res
    geo = _Geometry(ct.shape, chunk, block_rows, interpret)
    w_re, w_im = geo.to_kernel(jnp.real(ct)), geo.to_kernel(jnp.imag(ct))
    pos = [("pos", 0)] * 5
    s = geo.call(_summary_kernel, pos, [("chunk", 4)], (g_re, g_im, k_k, w_re, w_im))[0]
    c_in = _incoming_messages(s)
    ins = [("chunk", 2), ("chunk", 2)] + pos
    outs = [("pos", 0), ("pos", 0), ("chunk", 2)]
    a_bar, k_bar, zs = geo.call(_adjoint_kernel, ins, outs, (g_in, c_in, g_re, g_im, k_k, w_re, w_im))
    z_bar = jnp.sum(_from_stack(zs), axis=1)[:, : geo.c].reshape(ct.shape[:-1])
    return geo.from_kernel(a_bar), geo.from_kernel(k_bar), z_bar


_pallas_g.defvjp(_pallas_g_fwd, _pallas_g_bwd)


def _options(chunk, block_rows, interpret) -> tuple[int, int, bool]:
    """Checked static options: powers of two; ``interpret`` defaults to the CPU backend."""
    for name, v in (("chunk", chunk), ("block_rows", block_rows)):
        if v < 1 or v & (v - 1):
            raise ValueError(f"`{name}` must be a power of two, got {v}")
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    return int(chunk), int(block_rows), bool(interpret)


def pallas_resolvent_prepared(a, kappa, z, *, chunk: int = CHUNK, block_rows: int = BLOCK_ROWS,
                              interpret: bool | None = None):
    """:func:`pallas_causal_resolvent` on inputs already prepared by
    :func:`muse_jax.model.bk_core.prepare_inputs` (real ``a``, ``kappa`` of one shape, complex
    ``z`` of the batch shape; ``kappa[..., 0]`` is masked here): ``impl="pallas"`` of bk_core."""
    return _pallas_g(a, kappa, z, *_options(chunk, block_rows, interpret))


@functools.partial(jax.jit, static_argnames=("chunk", "block_rows", "interpret"))
def _pallas_jit(a, kappa, z, chunk, block_rows, interpret):
    from muse_jax.model.bk_core import prepare_inputs  # here: bk_core imports this module

    a, kappa, z = prepare_inputs(a, kappa, z, mask_first=False)
    return _pallas_g(a, kappa, z, chunk, block_rows, interpret)


def pallas_causal_resolvent(
    a, kappa, z, *, chunk: int = CHUNK, block_rows: int = BLOCK_ROWS, interpret: bool | None = None
):
    r"""Causal resolvent diagonal ``g_i = [(H_{1:i} - z)^{-1}]_{ii}`` by Pallas kernels.

    Same contract as :func:`muse_jax.model.bk_core.causal_resolvent_diag` (recursion (1),
    ``kappa[..., 0]`` ignored, ``z`` broadcast against ``a[..., :1]``, ``|g| <= 1 / Im z``),
    differentiable in reverse mode (``jax.grad``; custom VJP running the adjoint (2) as Pallas
    kernels, see the module docstring); not in forward mode.  ``causal_resolvent_diag(...,
    impl="pallas")`` is this with the default ``chunk``, ``block_rows`` and ``interpret``.

    Args:
      a, kappa, z: as ``causal_resolvent_diag``; real float32 (or float64) ``[..., N]``.
      chunk: positions per program ``L`` (a power of two; capped at the next power of two of N).
      block_rows: rows of the last batch axis per program ``R`` (a power of two; capped at the
        next power of two of that axis).
      interpret: run the kernels in the Pallas interpreter (default: on the CPU backend only,
        so the kernels compile for GPU (Triton); TPU was never tried).

    Returns:
      complex ``[..., N]`` (complex64 for float32 inputs).
    """
    chunk, block_rows, interpret = _options(chunk, block_rows, interpret)
    return _pallas_jit(a, kappa, z, chunk=chunk, block_rows=block_rows, interpret=interpret)
