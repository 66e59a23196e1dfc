"""The language model: embedding → scanned stack of pre-norm residual blocks → norm → tied head."""

import jax
import jax.numpy as jnp
from flax import nnx

from muse_jax.model.attention import CausalSelfAttention
from muse_jax.model.bk_mixer import BKMixer
from muse_jax.model.embedding import TokenEmbedding
from muse_jax.model.ffn import GatedMLP
from muse_jax.model.linear import LinearSpec
from muse_jax.model.moe import MixtureOfExperts
from muse_jax.model.param_roles import mark_stacked
from muse_jax.model.remat import name_activation, remat_layer
from muse_jax.settings import ModelSettings, Settings


def no_experts_aux() -> dict:
    """The auxiliary outputs of a block without experts: zero loss, an empty load vector."""
    return {"aux_loss": jnp.zeros((), jnp.float32), "expert_load": jnp.zeros((0,), jnp.float32)}


class Block(nnx.Module):
    """x ← x + mixer(norm(x));  x ← x + ffn(norm(x)).  The mixer is BK or causal attention; the FFN
    is a gated MLP or, with `model.router` ≠ none, a mixture of experts."""

    def __init__(self, model: ModelSettings, *, rngs: nnx.Rngs):
        d = model.d_model
        linear = LinearSpec.of(model)
        self.is_bk = model.is_bk
        self.mix_norm = nnx.RMSNorm(d, rngs=rngs)
        if self.is_bk:
            self.mixer = BKMixer(d, model.bk, linear, rngs=rngs)
        else:
            self.mixer = CausalSelfAttention(d, model.n_heads, linear, rngs=rngs, implementation=model.attention_impl)
        self.ffn_norm = nnx.RMSNorm(d, rngs=rngs)
        self.has_experts = model.router != "none"
        if self.has_experts:
            self.ffn = MixtureOfExperts(model, linear, rngs=rngs)
        else:
            self.ffn = GatedMLP(d, model.ffn_width, linear, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict]:
        """(new x, aux) with aux = {"aux_loss": scalar, "expert_load": [E] (empty without experts)}."""
        h = self.mix_norm(x)
        mixed, g = self.mixer(h) if self.is_bk else (self.mixer(h), None)
        return self.feed_forward(x, mixed, g)

    def prefill(self, x: jax.Array, start: jax.Array, max_len: int) -> tuple[jax.Array, dict]:
        """(new x, this layer's decode cache) over a left-padded prompt (see `LanguageModel.prefill`)."""
        mixed, g, cache = self.mixer.prefill(self.mix_norm(x), start, max_len)
        return self.feed_forward(x, mixed, g)[0], cache

    def decode_step(self, x: jax.Array, cache: dict, index: jax.Array, start: jax.Array) -> tuple[jax.Array, dict]:
        """(new x [B, 1, D], cache update: what the mixer's `write_cache` stores) for one token at
        position `index`."""
        mixed, g, update = self.mixer.step(self.mix_norm(x), cache, index, start)
        return self.feed_forward(x, mixed, g)[0], update

    def feed_forward(self, x: jax.Array, mixed: jax.Array, g: jax.Array | None) -> tuple[jax.Array, dict]:
        """The residual after the mixer, then the FFN (routed by g with the scattering router)."""
        x = x + name_activation(mixed, "mixer_out")
        h = self.ffn_norm(x)
        if not self.has_experts:
            return x + name_activation(self.ffn(h), "ffn_out"), no_experts_aux()
        y, aux = self.ffn(h, g)
        return x + name_activation(y, "ffn_out"), aux


class LanguageModel(nnx.Module):
    """Causal LM; the blocks' parameters are stacked on a leading layer axis and run by `lax.scan`,
    so compile time does not grow with depth.

    `model(tokens)` returns logits. `model.forward_with_aux(tokens)` returns (logits, aux):
      aux["aux_loss"]     scalar to ADD to the training loss: the router's weighted load-balancing
                          loss averaged over layers (0 unless `model.router=learned`);
      aux["expert_load"]  [n_layers, E] fraction of token-slots per expert per layer (E = 0 without
                          experts), for logging.
    Both are plain arrays, so a jitted train step stays functional (nnx.merge → call → arrays).

    Generation: `prefill(tokens, max_len, start)` → (last logits, cache), then
    `decode_step(token, cache)` → (logits, cache) per token. The cache is a pytree
    {"layers": per-layer state stacked on the layer axis (scanned like the parameters),
     "index": position of the next token, "start": [B] first real position of each row}.
    Per layer it is the BK recurrent state ([B, C] complex, `BKMixer.step`: O(1) in the context
    length) or the attention KV cache ([B, H, max_len, d], `CausalSelfAttention.step`).
    """

    def __init__(self, model: ModelSettings, vocab_size: int, *, rngs: nnx.Rngs, remat_policy: str = "none"):
        remat_layer(lambda x: x, remat_policy)  # validates the name
        self.remat_policy = remat_policy
        self.d_model = model.d_model
        self.embed = TokenEmbedding(model, vocab_size, rngs=rngs)

        @nnx.split_rngs(splits=model.n_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(rngs: nnx.Rngs) -> Block:
            return Block(model, rngs=rngs)

        self.blocks = make_blocks(rngs)
        mark_stacked(self.blocks)  # the layer axis: scanned, never sharded (param_roles.py)
        self.final_norm = nnx.RMSNorm(model.d_model, rngs=rngs)

    def forward_with_aux(self, tokens: jax.Array) -> tuple[jax.Array, dict]:
        """tokens: int [B, N] → (logits float32 [B, N, V], aux) — see the class docstring."""
        h, aux = self.features_with_aux(tokens)
        return self.readout(h), aux

    def features_with_aux(self, tokens: jax.Array) -> tuple[jax.Array, dict]:
        """tokens: int [B, N] → (h [B, N, D], aux): the normed final hidden states the tied head
        reads (logits = `readout(h)`), so a loss can apply the head a chunk of tokens at a time."""
        x = self.embed.embed(tokens)
        x, aux = self.scan_blocks(lambda block, x, _: block(x), x, None, self.remat_policy)
        return self.final_norm(x), {"aux_loss": jnp.mean(aux["aux_loss"]), "expert_load": aux["expert_load"]}

    def scan_blocks(self, fn, x: jax.Array, per_layer, remat_policy: str = "none"):
        """lax.scan of fn(block, x, per_layer[l]) → (x, out[l]) over the stacked layers."""
        block_def, block_state = nnx.split(self.blocks)

        def layer(x, inputs):
            state, layer_input = inputs
            return fn(nnx.merge(block_def, state), x, layer_input)

        return jax.lax.scan(remat_layer(layer, remat_policy), x, (block_state, per_layer))

    def head(self, x: jax.Array) -> jax.Array:
        """The last block's output x [..., D] → logits float32 [..., V]: final norm, then the tied head."""
        return self.readout(self.final_norm(x))

    def readout(self, h: jax.Array) -> jax.Array:
        """The tied head on normed hidden states h [..., D] → logits float32 [..., V]."""
        return self.embed.logits(h).astype(jnp.float32)

    def readout_function(self):
        """(apply, params) with apply(params, h) = `readout(h)`, a pure function of the head's own
        parameters (the token table or its TT cores, and the hyperbolic curvature and temperature),
        to run inside `lax.scan` / `jax.checkpoint` (the chunked loss, `train/loss.py`)."""
        graphdef, state = nnx.split(self.embed)

        def apply(params, h: jax.Array) -> jax.Array:
            return nnx.merge(graphdef, params).logits(h).astype(jnp.float32)

        return apply, nnx.to_pure_dict(state)

    def prefill(self, tokens: jax.Array, max_len: int, start: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """tokens int [B, N], left-padded: row b's prompt is tokens[b, start[b]:] (start [B], default
        0) → (logits float32 [B, V] for the next token, cache with room for max_len ≥ N positions).
        Parallel form; padding never reaches a real position (BK: κ cut at start, `BKMixer.resolvent`;
        attention: masked keys, RoPE positions n − start[b])."""
        start = jnp.zeros(tokens.shape[:1], jnp.int32) if start is None else jnp.asarray(start, jnp.int32)
        x, layers = self.scan_blocks(lambda block, x, _: block.prefill(x, start, max_len),
                                     self.embed.embed(tokens), None)
        return self.head(x[:, -1]), {"layers": layers, "index": jnp.asarray(tokens.shape[1], jnp.int32),
                                     "start": start}

    def decode_step(self, token: jax.Array, cache: dict) -> tuple[jax.Array, dict]:
        """token int [B] at position cache["index"] → (logits float32 [B, V] for the next token, cache)."""
        index, start = cache["index"], cache["start"]
        x, updates = self.scan_blocks(lambda block, x, c: block.decode_step(x, c, index, start),
                                      self.embed.embed(token[:, None]), cache["layers"])
        layers = self.blocks.mixer.write_cache(cache["layers"], updates, index)  # after the scan: in place
        return self.head(x[:, 0]), {"layers": layers, "index": index + 1, "start": start}

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens: int [B, N] → logits float32 [B, N, V]."""
        return self.forward_with_aux(tokens)[0]


def build_model(settings: Settings, vocab_size: int, rngs: nnx.Rngs) -> LanguageModel:
    """The model a run trains: `model.*` plus the run's `train.remat_policy`."""
    return LanguageModel(settings.model, vocab_size, rngs=rngs, remat_policy=settings.train.remat_policy)


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
