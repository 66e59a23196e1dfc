"""Causal multi-head self-attention with rotary position embeddings (the Transformer baseline's mixer)."""

import jax
import jax.numpy as jnp
from flax import nnx

from muse_jax.model.linear import LinearSpec


def rotary_embedding(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotate pairs of features by position-dependent angles (RoPE).

    For head dimension d and feature pair (x_{2k}, x_{2k+1}) ↦ rotation by θ_k·t with
    θ_k = base^{−2k/d}. x: [B, T, H, d], positions: [T].
    """
    d = x.shape[-1]
    freqs = base ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
    angles = positions[:, None].astype(jnp.float32) * freqs[None, :]  # [T, d/2]
    cos = jnp.cos(angles)[None, :, None, :]
    sin = jnp.sin(angles)[None, :, None, :]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return rotated.reshape(x.shape).astype(x.dtype)


class CausalSelfAttention(nnx.Module):
    """softmax(Q Kᵀ/√d + causal mask) V over heads; O(N²) in sequence length."""

    def __init__(self, d_model: int, n_heads: int, linear: LinearSpec = LinearSpec(), *, rngs: nnx.Rngs):
        if d_model % n_heads:
            raise ValueError(f"model.d_model={d_model} is not divisible by model.n_heads={n_heads}")
        self.n_heads = n_heads
        self.qkv = linear.make(d_model, 3 * d_model, rngs=rngs)
        self.out = linear.make(d_model, d_model, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        q, k, v = jnp.split(self.qkv(x).reshape(b, t, 3 * self.n_heads, d // self.n_heads), 3, axis=2)
        positions = jnp.arange(t)
        q, k = rotary_embedding(q, positions), rotary_embedding(k, positions)
        y = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.reshape(b, t, d))
