"""Gated MLP feed-forward sublayer (shared by the BK model and the Transformer baseline)."""

import jax
from flax import nnx


class GatedMLP(nnx.Module):
    """SwiGLU feed-forward: y = W_down (silu(W_gate x) ⊙ W_up x)."""

    def __init__(self, d_model: int, d_hidden: int, *, rngs: nnx.Rngs):
        self.gate = nnx.Linear(d_model, d_hidden, use_bias=False, rngs=rngs)
        self.up = nnx.Linear(d_model, d_hidden, use_bias=False, rngs=rngs)
        self.down = nnx.Linear(d_hidden, d_model, use_bias=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))
