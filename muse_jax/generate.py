"""Text generation from a trained model (full-sequence forward per token; causal, so the
unfilled tail of the buffer never influences the position being sampled)."""

import jax
import jax.numpy as jnp
from flax import nnx

from muse_jax.data.tokenizer import EOS_ID, PAD_ID
from muse_jax.sampling import sample_token


def generate_tokens(graphdef: nnx.GraphDef, params, prompt_ids: list[int], max_new_tokens: int,
                    key: jax.Array, temperature: float, top_k: int, top_p: float) -> list[int]:
    """Sample up to `max_new_tokens` after `prompt_ids`; stops at EOS (not returned)."""
    n_prompt = len(prompt_ids)
    buffer = jnp.full((1, n_prompt + max_new_tokens), PAD_ID, jnp.int32).at[0, :n_prompt].set(
        jnp.asarray(prompt_ids, jnp.int32)
    )

    @jax.jit
    def run(params, buffer, key):
        model = nnx.merge(graphdef, params)

        def body(i, carry):
            buffer, key, done = carry
            key, sub = jax.random.split(key)
            logits = jax.lax.dynamic_index_in_dim(model(buffer)[0], n_prompt + i - 1, keepdims=False)
            token = sample_token(logits, sub, temperature, top_k, top_p)
            token = jnp.where(done, PAD_ID, token)
            buffer = buffer.at[0, n_prompt + i].set(token)
            return buffer, key, done | (token == EOS_ID)

        buffer, _, _ = jax.lax.fori_loop(0, max_new_tokens, body, (buffer, key, jnp.array(False)))
        return buffer

    out = [int(t) for t in run(params, buffer, key)[0, n_prompt:]]
    return out[: out.index(EOS_ID)] if EOS_ID in out else out
