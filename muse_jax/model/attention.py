"""Causal multi-head self-attention with rotary position embeddings (the Transformer baseline's mixer).

The training / evaluation forward runs `jax.nn.dot_product_attention` with the implementation
`model.attention_impl` asks for (`attention_implementation`):
  xla    XLA's attention: the [B, H, T, T] scores materialised (any backend, any dtype);
  cudnn  cuDNN's fused flash attention (NVIDIA GPUs; bfloat16 / float16 inputs): the scores are
         never stored, and the causal half is skipped;
  auto   cudnn where it can run — a CUDA GPU, bfloat16 / float16 inputs (`train.compute_dtype`
         bfloat16, or auto on a GPU) and a head dimension that is a multiple of 8 and ≤ 128 —
         else xla (so always xla on CPU, where the two agree with the plain softmax to float32).
Generation (prefill with its padding mask, and the KV-cache step) always uses the XLA / explicit
forms below, whatever the choice: decoding is unchanged and exact.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from muse_jax.model.linear import LinearSpec
from muse_jax.settings import UnsupportedBackend

FLASH_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))  # what cuDNN's flash attention takes
FLASH_MAX_HEAD_DIM = 128  # cuDNN flash: head dim a multiple of 8, ≤ 128 (≤ 256 from Hopper on; auto stays safe)


def accelerator() -> str:
    """The backend attention runs on: "cuda" for an NVIDIA GPU, else `jax.default_backend()`
    ("cpu", "tpu", or "gpu" for a ROCm GPU, which has no cuDNN)."""
    backend = jax.default_backend()
    if backend == "gpu" and "cuda" in jax.devices()[0].client.platform_version.lower():
        return "cuda"
    return backend


def attention_implementation(requested: str, platform: str, dtype, head_dim: int) -> str:
    """The `implementation=` for `jax.nn.dot_product_attention`: "xla" or "cudnn".

    requested: `model.attention_impl`; platform: `accelerator()`; dtype: that of q, k, v.
    auto → "cudnn" only on "cuda" with dtype in FLASH_DTYPES and head_dim % 8 == 0, ≤ FLASH_MAX_HEAD_DIM;
    else "xla". cudnn where it cannot run → UnsupportedBackend naming the key."""
    if requested == "xla":
        return "xla"
    if requested == "cudnn":
        if platform != "cuda":
            raise UnsupportedBackend(f"model.attention_impl=cudnn needs an NVIDIA GPU (cuDNN); the backend is "
                                     f"{platform}: use auto or xla")
        if jnp.dtype(dtype) not in FLASH_DTYPES:
            raise UnsupportedBackend(f"model.attention_impl=cudnn needs bfloat16 or float16 attention "
                                     f"(train.compute_dtype=bfloat16 or auto), got {jnp.dtype(dtype).name}")
        return "cudnn"
    flash = jnp.dtype(dtype) in FLASH_DTYPES and head_dim % 8 == 0 and head_dim <= FLASH_MAX_HEAD_DIM
    return "cudnn" if platform == "cuda" and flash else "xla"


def rotary_embedding(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotate pairs of features by position-dependent angles (RoPE).

    For head dimension d and feature pair (x_{2k}, x_{2k+1}) ↦ rotation by θ_k·t with
    θ_k = base^{−2k/d}. x: [B, T, H, d], positions: [T] (shared) or [B, T] (per row).
    """
    d = x.shape[-1]
    freqs = base ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
    angles = positions[..., None].astype(jnp.float32) * freqs  # [(B,) T, d/2]
    cos = jnp.cos(angles)[..., None, :]  # broadcasts over heads
    sin = jnp.sin(angles)[..., None, :]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return rotated.reshape(x.shape).astype(x.dtype)


class CausalSelfAttention(nnx.Module):
    """softmax(Q Kᵀ/√d + causal mask) V over heads; O(N²) in sequence length.

    Generation (`prefill`, `step`) keeps a KV cache {"k", "v"} of fixed shape [B, H, max_len, d]:
    `prefill` writes the prompt's keys and values at positions 0..N−1; `step` attends to the
    cached positions start[b] ≤ j < index and to the new token itself, and returns the new
    token's k and v, which `write_cache` stores at `index` (lax.dynamic_update_slice, in place
    when the cache is donated). Its cost is O(max_len) per token. Rows are left-padded: row b's
    tokens begin at start[b], and RoPE positions are counted from there (n − start[b]).
    """

    def __init__(self, d_model: int, n_heads: int, linear: LinearSpec = LinearSpec(), *, rngs: nnx.Rngs,
                 implementation: str = "auto"):
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.implementation = implementation  # model.attention_impl
        self.platform = accelerator()
        if implementation == "cudnn":  # the backend is known now: fail at build, not at the first trace
            attention_implementation(implementation, self.platform, jnp.bfloat16, d_model // n_heads)
        self.qkv = linear.make(d_model, 3 * d_model, rngs=rngs)
        self.out = linear.make(d_model, d_model, rngs=rngs)

    def project(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(q, k, v), each [B, T, H, d], RoPE applied to q and k at `positions` ([T] or [B, T])."""
        b, t, d = x.shape
        q, k, v = jnp.split(self.qkv(x).reshape(b, t, 3 * self.n_heads, d // self.n_heads), 3, axis=2)
        return rotary_embedding(q, positions), rotary_embedding(k, positions), v

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        q, k, v = self.project(x, jnp.arange(t))
        impl = attention_implementation(self.implementation, self.platform, q.dtype, q.shape[-1])
        y = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)
        return self.out(y.reshape(b, t, d))

    def prefill(self, x: jax.Array, start: jax.Array, max_len: int) -> tuple[jax.Array, None, dict]:
        """(y [B, T, D], None, cache) for a left-padded prompt x [B, T, D]; start [B]. Query n of row
        b attends to keys start[b] ≤ j ≤ n (a padding query, whose output is never used, to itself)."""
        b, t, d = x.shape
        n = jnp.arange(t)
        q, k, v = self.project(x, n[None, :] - start[:, None])
        real_key = n[None, None, :] >= start[:, None, None]  # [B, 1, T]
        mask = (n[:, None] >= n[None, :]) & (real_key | (n[:, None] == n[None, :]))  # [B, T, T]
        y = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="xla")
        pad = ((0, 0), (0, 0), (0, max_len - t), (0, 0))
        cache = {name: jnp.pad(jnp.swapaxes(kv, 1, 2), pad) for name, kv in (("k", k), ("v", v))}  # [B, H, S, d]
        return self.out(y.reshape(b, t, d)), None, cache

    def step(self, x: jax.Array, cache: dict, index: jax.Array, start: jax.Array
             ) -> tuple[jax.Array, None, dict]:
        """One token x [B, 1, D] at position `index` → (y [B, 1, D], None, its {"k", "v"} [B, 1, H, d]).

        With scores s_j = q·k_j/√d over the cached j (start[b] ≤ j < index) and s_* = q·k/√d for
        the token itself, m = max(max_j s_j, s_*):
            y = (Σ_j e^{s_j − m} v_j + e^{s_* − m} v) / (Σ_j e^{s_j − m} + e^{s_* − m}),
        i.e. causal softmax attention over the prefix and the token; the cache is only read here and
        written once per step, after the layer scan (`write_cache`)."""
        b, _, d = x.shape
        q, k, v = self.project(x, (index - start)[:, None])
        scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
        cached = jnp.einsum("bqhd,bhsd->bhqs", q, cache["k"].astype(q.dtype)) * scale  # [B, H, 1, S]
        j = jnp.arange(cache["k"].shape[2])
        valid = (j[None, :] >= start[:, None]) & (j[None, :] < index)  # [B, S]
        cached = jnp.where(valid[:, None, None, :], cached, -jnp.inf)
        own = jnp.einsum("bqhd,bqhd->bhq", q, k)[..., None] * scale  # [B, H, 1, 1]
        top = jnp.maximum(jnp.max(cached, axis=-1, keepdims=True), own)
        p_cached, p_own = jnp.exp(cached - top), jnp.exp(own - top)
        numerator = jnp.einsum("bhqs,bhsd->bqhd", p_cached, cache["v"].astype(q.dtype))
        numerator = numerator + jnp.swapaxes(p_own, 1, 2) * v  # [B, 1, H, d]
        denominator = jnp.swapaxes(jnp.sum(p_cached, axis=-1, keepdims=True) + p_own, 1, 2)
        y = numerator / denominator
        return self.out(y.reshape(b, 1, d)), None, {"k": k, "v": v}

    def write_cache(self, layers: dict, update: dict, index: jax.Array) -> dict:
        """The stacked caches [n_layers, B, H, max_len, d] with every layer's new token ([n_layers, B,
        1, H, d]) written at position `index`."""
        return {name: jax.lax.dynamic_update_slice_in_dim(
            layers[name], jnp.swapaxes(update[name], 2, 3).astype(layers[name].dtype), index, axis=3)
            for name in ("k", "v")}
