r"""Tensor-train (TT) embedding tables: a V×D matrix stored as three small cores. Pure functions.

Vocabulary and width are factorised, V ≤ V' = v1·v2·v3 (ids past V are padding rows) and
D = d1·d2·d3; token t has digits (i1, i2, i3) (row-major) and

    E[t, (a, b, c)] = Σ_{r, s} G1[i1, a, r] · G2[i2, r, b, s] · G3[i3, s, c]

with cores G1 [v1, d1, R], G2 [v2, R, d2, R], G3 [v3, R, d3] (TT rank R): storage
R(v1 d1 + R v2 d2 + v3 d3) instead of V D.

The tied decoder needs scores h·E[t] for every t. `tt_scores` contracts h with the cores one at
a time (largest intermediate T·v1·max(d2 d3, v2 d3)·R) and never forms E; when materialising E
(V'·D) is the smaller of the two, it reconstructs E and does one matmul (`tt_score_path`).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def balanced_factors(n: int, parts: int = 3) -> tuple[int, ...]:
    """n = f1·…·f_parts exactly, as balanced as greedy prime placement allows (descending)."""
    primes, m, p = [], n, 2
    while p * p <= m:
        while m % p == 0:
            primes.append(p)
            m //= p
        p += 1
    if m > 1:
        primes.append(m)
    factors = [1] * parts
    for q in sorted(primes, reverse=True):
        factors[int(np.argmin(factors))] *= q
    return tuple(sorted(factors, reverse=True))


def vocab_factors(vocab_size: int, parts: int = 3) -> tuple[int, ...]:
    """(v, …, v) with v = ceil(V^{1/parts}): V' = v^parts ≥ V padded rows."""
    v = math.ceil(round(vocab_size ** (1.0 / parts), 9))
    return (v,) * parts


def token_digits(tokens: jax.Array, vocab_shape: tuple[int, int, int]) -> tuple[jax.Array, ...]:
    """Row-major digits (i1, i2, i3) of token ids."""
    _, v2, v3 = vocab_shape
    return tokens // (v2 * v3), (tokens // v3) % v2, tokens % v3


def tt_lookup(tokens: jax.Array, cores: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
    """E[tokens] → [..., D] from per-token core slices (no table)."""
    g1, g2, g3 = cores
    i1, i2, i3 = token_digits(tokens, (g1.shape[0], g2.shape[0], g3.shape[0]))
    rows = jnp.einsum("...ar,...rbs,...sc->...abc", g1[i1], g2[i2], g3[i3])
    return rows.reshape(*tokens.shape, -1)


def tt_reconstruct(cores) -> jax.Array:
    """The full padded table E [V', D]."""
    g1, g2, g3 = cores
    table = jnp.einsum("iar,jrbs,ksc->ijkabc", g1, g2, g3)
    v = g1.shape[0] * g2.shape[0] * g3.shape[0]
    return table.reshape(v, -1)


def tt_contracted_scores(h: jax.Array, cores) -> jax.Array:
    """h·E[t] for all padded t, [..., D] → [..., V'], contracting one core at a time."""
    g1, g2, g3 = cores
    d1, d2, d3 = g1.shape[1], g2.shape[2], g3.shape[2]
    x = h.reshape(*h.shape[:-1], d1, d2, d3)
    x = jnp.einsum("...abc,iar->...ibcr", x, g1)
    x = jnp.einsum("...ibcr,jrbs->...ijcs", x, g2)
    x = jnp.einsum("...ijcs,ksc->...ijk", x, g3)
    return x.reshape(*h.shape[:-1], -1)


def tt_score_path(n_vectors: int, cores) -> str:
    """'contract' when its largest intermediate is smaller than the V'×D table, else 'materialise'."""
    g1, g2, g3 = cores
    (v1, d1, rank), (v2, d2, d3, v3) = g1.shape, (g2.shape[0], g2.shape[2], g3.shape[2], g3.shape[0])
    contract_peak = n_vectors * v1 * max(d2 * d3, v2 * d3) * rank
    table = v1 * v2 * v3 * d1 * d2 * d3
    return "contract" if contract_peak < table else "materialise"


def tt_scores(h: jax.Array, cores, path: str = "auto") -> jax.Array:
    """h·E[t] for all padded t: [..., D] → [..., V'] by the cheaper path (see `tt_score_path`)."""
    if path == "auto":
        path = tt_score_path(math.prod(h.shape[:-1]), cores)
    if path == "contract":
        return tt_contracted_scores(h, cores)
    if path == "materialise":
        return h @ tt_reconstruct(cores).T
    raise ValueError(f"unknown path {path!r}; valid: auto, contract, materialise")


def tt_init_cores(key: jax.Array, vocab_shape, width_shape, rank: int):
    """Cores with i.i.d. N(0, σ²), σ = R^{-1/3}, so each entry of E has variance R²σ⁶ = 1 (as nn.Embed)."""
    std = rank ** (-1.0 / 3.0)
    k1, k2, k3 = jax.random.split(key, 3)
    (v1, v2, v3), (d1, d2, d3) = vocab_shape, width_shape
    return (std * jax.random.normal(k1, (v1, d1, rank)),
            std * jax.random.normal(k2, (v2, rank, d2, rank)),
            std * jax.random.normal(k3, (v3, rank, d3)))
