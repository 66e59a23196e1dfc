"""Gated MLP feed-forward sublayer (shared by the BK model and the Transformer baseline)."""

import jax
from flax import nnx

from muse_jax.model.linear import LinearSpec


class GatedMLP(nnx.Module):
    """SwiGLU feed-forward: y = W_down (silu(W_gate x) ⊙ W_up x)."""

    def __init__(self, d_model: int, d_hidden: int, linear: LinearSpec = LinearSpec(), *, rngs: nnx.Rngs):
        self.gate = linear.make(d_model, d_hidden, rngs=rngs)
        self.up = linear.make(d_model, d_hidden, rngs=rngs)
        self.down = linear.make(d_hidden, d_model, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))
