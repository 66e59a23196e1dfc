"""The language model: embedding → scanned stack of pre-norm residual blocks → norm → tied head."""

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from muse_jax.model.attention import CausalSelfAttention
from muse_jax.model.bk_mixer import BKMixer
from muse_jax.model.ffn import GatedMLP

MODEL_KINDS = ("bk", "transformer")


class Block(nnx.Module):
    """x ← x + mixer(norm(x));  x ← x + ffn(norm(x)).  The mixer is BK or causal attention."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        d = cfg.d_model
        self.mix_norm = nnx.RMSNorm(d, rngs=rngs)
        if cfg.kind == "bk":
            self.mixer = BKMixer(d, cfg.bk.channels, cfg.bk.lap_eta, cfg.bk.scan_impl, rngs=rngs)
        else:
            self.mixer = CausalSelfAttention(d, cfg.n_heads, rngs=rngs)
        self.ffn_norm = nnx.RMSNorm(d, rngs=rngs)
        self.ffn = GatedMLP(d, cfg.ffn_mult * d, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.mixer(self.mix_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class LanguageModel(nnx.Module):
    """Causal LM; the blocks' parameters are stacked on a leading layer axis and run by `lax.scan`,
    so compile time does not grow with depth."""

    def __init__(self, cfg: ml_collections.ConfigDict, vocab_size: int, *, rngs: nnx.Rngs):
        if cfg.kind not in MODEL_KINDS:
            raise ValueError(f"model.kind must be one of {MODEL_KINDS}, got {cfg.kind!r}")
        self.embed = nnx.Embed(vocab_size, cfg.d_model, rngs=rngs)

        @nnx.split_rngs(splits=cfg.n_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(rngs: nnx.Rngs) -> Block:
            return Block(cfg, rngs=rngs)

        self.blocks = make_blocks(rngs)
        self.final_norm = nnx.RMSNorm(cfg.d_model, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens: int [B, N] → logits float32 [B, N, V]."""
        x = self.embed(tokens)
        block_def, block_state = nnx.split(self.blocks)

        def layer(x, state):
            return nnx.merge(block_def, state)(x), None

        x, _ = jax.lax.scan(layer, x, block_state)
        return self.embed.attend(self.final_norm(x)).astype(jnp.float32)


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
