"""Token embeddings and the tied output head: `model.embedding` = euclidean | hyperbolic | htt | hyperbolic_htt.

A *table* stores the V×D token matrix E (dense, or tensor-train cores); a *geometry* turns it
into the input embedding and the tied logits:

  euclidean   x_t = E_t;                         logits_t = α · h · E_t / D
              (α = `model.output_mult`. E has unit-variance entries and h unit RMS. The 1/D
              readout is μP's: at init the residual stream holds the input token's own row E_s,
              so h·E_s ≈ D, and a 1/√D head gave that token a logit ≈ 0.75 √D — 24 at D = 1024,
              a first loss of 23 nats. With 1/D it is ≈ 0.75 α at every width, the other
              logits have std α/√D, and the first loss is ≈ ln V. docs/architecture.md)
  hyperbolic  p_t = exp_0(E_t / √D) on the Poincaré ball of learnable curvature c ≥ c_min;
              x_t = √D · log_0(p_t)   (= E_t up to the ball's float32 edge: log_0 ∘ exp_0 = id);
              q = exp_0(h / √D);      logits_t = -τ · d_c(q, p_t),   τ > 0 learned.
              The geometry acts through the head: a token is scored by its hyperbolic distance.

`htt` is the euclidean geometry on a TT table, `hyperbolic_htt` the hyperbolic one (whose head
needs every ‖E_t‖, so it reconstructs the V×D table from the cores once per call).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from muse_jax.model.bk_mixer import inverse_softplus
from muse_jax.model.hyperbolic import poincare_distance_matrix, poincare_expmap0, poincare_logmap0
from muse_jax.model.param_roles import float32_param, weight_matrix
from muse_jax.model.tensor_train import (
    balanced_factors, tt_init_cores, tt_lookup, tt_reconstruct, tt_scores, vocab_factors,
)
from muse_jax.settings import ModelSettings

INITIAL_CURVATURE = 1.0
INITIAL_TEMPERATURE = 2.0  # τ at init: at 4 the input token's own (nearby) point out-scored V others (first loss ln V + 3.5 at d 64)


class DenseTable(nnx.Module):
    """E [V, D], entries N(0, 1) (as nnx.Embed)."""

    def __init__(self, vocab_size: int, d_model: int, *, rngs: nnx.Rngs):
        self.embedding = weight_matrix(jax.random.normal(rngs.params(), (vocab_size, d_model), jnp.float32),
                                       lr_group="embedding")

    def lookup(self, tokens: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], tokens, axis=0)

    def scores(self, h: jax.Array) -> jax.Array:
        return h @ self.embedding[...].T

    def matrix(self) -> jax.Array:
        return self.embedding[...]


class TTTable(nnx.Module):
    """E as three TT cores (see `tensor_train.py`): vocab padded to v³, D = d1·d2·d3."""

    def __init__(self, vocab_size: int, d_model: int, rank: int, *, rngs: nnx.Rngs):
        self.vocab_size, self.d_model = vocab_size, d_model
        cores = tt_init_cores(rngs.params(), vocab_factors(vocab_size), balanced_factors(d_model), rank)
        self.core_vocab_1, self.core_vocab_2, self.core_vocab_3 = (weight_matrix(g, lr_group="embedding") for g in cores)

    def cores(self):
        return self.core_vocab_1[...], self.core_vocab_2[...], self.core_vocab_3[...]

    def lookup(self, tokens: jax.Array) -> jax.Array:
        return tt_lookup(tokens, self.cores())

    def scores(self, h: jax.Array) -> jax.Array:
        return tt_scores(h, self.cores())[..., : self.vocab_size]

    def matrix(self) -> jax.Array:
        return tt_reconstruct(self.cores())[: self.vocab_size]


class TokenEmbedding(nnx.Module):
    """Input embedding `embed(tokens)` and tied head `logits(h)` for one `model.embedding` choice."""

    def __init__(self, model: ModelSettings, vocab_size: int, *, rngs: nnx.Rngs):
        kind, d = model.embedding, model.d_model
        self.scale = math.sqrt(d)
        self.readout = model.output_mult / d
        self.hyperbolic = kind.startswith("hyperbolic")
        if kind.endswith("htt"):
            self.table = TTTable(vocab_size, d, model.htt_rank, rngs=rngs)
        else:
            self.table = DenseTable(vocab_size, d, rngs=rngs)
        if self.hyperbolic:
            self.c_min = model.hyperbolic_c_min
            self.curvature_raw = float32_param(jnp.array(inverse_softplus(INITIAL_CURVATURE), jnp.float32))
            self.temperature_raw = float32_param(jnp.array(inverse_softplus(INITIAL_TEMPERATURE), jnp.float32))

    def curvature(self) -> jax.Array:
        """c = c_min + softplus(ρ_c) ≥ c_min (hyperbolic only)."""
        return self.c_min + jax.nn.softplus(self.curvature_raw[...])

    def embed(self, tokens: jax.Array) -> jax.Array:
        rows = self.table.lookup(tokens)
        if not self.hyperbolic:
            return rows
        c = self.curvature()
        return self.scale * poincare_logmap0(poincare_expmap0(rows / self.scale, c), c)

    def logits(self, h: jax.Array) -> jax.Array:
        if not self.hyperbolic:
            return self.table.scores(h) * self.readout
        c = self.curvature()  # float32 whatever the compute dtype: bfloat16 distances near the ball's edge are noise
        points = poincare_expmap0(self.table.matrix().astype(jnp.float32) / self.scale, c)
        query = poincare_expmap0(h.astype(jnp.float32) / self.scale, c)
        return -jax.nn.softplus(self.temperature_raw[...]) * poincare_distance_matrix(query, points, c)
