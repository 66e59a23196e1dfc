"""Text generation: prefill the prompt with the parallel form, then decode token by token.

    logits, cache = model.prefill(prompt, max_len)          parallel, O(P) (BK) / O(P²) (attention)
    repeat: token = sample(logits); logits, cache = model.decode_step(token, cache)

The decode step is one jitted function. For ResNet-BK the cache is the recurrent state of every
layer ([B, C] complex per layer: g_{n−1}, and s_{n−1} with semiseparable mixing), so a token
costs the same at any context length; the Transformer keeps a KV cache of max_len positions and
attends over it (`muse_jax/model/lm.py`, `LanguageModel.prefill` / `decode_step`).

A batch of prompts is LEFT-padded to one length P (rounded up to a multiple of `length_bucket`,
so that prompts of similar length share one compiled prefill): row b's prompt starts at
start[b] = P − len_b. Padding never reaches a real position — the BK chain is cut at start[b]
(κ = 0 there, so g and s restart from their initial value 0 exactly), attention masks padded
keys and counts RoPE positions from start[b] — so a row's tokens do not depend on the other
rows (tests/test_generate.py: a batch gives the same greedy tokens as each prompt alone).

Sampling (`muse_jax/sampling.py`): repetition penalty over the prompt and the tokens generated
so far, temperature, top-k, top-p; step t draws with fold_in(key, t), so a seed fixes the output.
A row stops at EOS (not returned); generation stops when every row has stopped or after
`max_new_tokens`.
"""

from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from muse_jax.data.tokenizer import EOS_ID, PAD_ID
from muse_jax.sampling import sample_next
from muse_jax.settings import SampleSettings


def left_pad(prompts: list[list[int]], pad_id: int, bucket: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32 [B, P], start int32 [B]): prompt b in tokens[b, start[b]:], P a multiple of bucket."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    length = -(-max(len(p) for p in prompts) // bucket) * bucket
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    start = np.array([length - len(p) for p in prompts], np.int32)
    for row, (p, s) in enumerate(zip(prompts, start)):
        tokens[row, s:] = p
    return tokens, start


class Generator:
    """Jitted prefill, sampler and decode step for one model graph and one set of sampling settings.
    `cast`: params → the params the forward pass sees (the run's compute dtype, `ModelSetup.generator`)."""

    def __init__(self, graphdef: nnx.GraphDef, settings: SampleSettings, eos_id: int = EOS_ID,
                 pad_id: int = PAD_ID, length_bucket: int = 64, cast=lambda params: params):
        self.graphdef, self.settings, self.cast = graphdef, settings, cast
        self.eos_id, self.pad_id, self.length_bucket = eos_id, pad_id, length_bucket
        self.prefill = jax.jit(self._prefill, static_argnames=("max_len",))
        self.decode_step = jax.jit(self._decode_step, donate_argnums=(1,))
        self.choose = jax.jit(self._choose)

    def _prefill(self, params, tokens, start, max_len: int):
        """(next-token logits [B, V], cache, seen [B, V]: the prompt's tokens, for the penalty)."""
        logits, cache = nnx.merge(self.graphdef, self.cast(params)).prefill(tokens, max_len, start)
        real = jnp.arange(tokens.shape[1])[None, :] >= start[:, None]
        vocab = logits.shape[-1]
        rows = jnp.arange(tokens.shape[0])[:, None]
        seen = jnp.zeros(logits.shape, bool).at[rows, jnp.where(real, tokens, vocab)].set(True, mode="drop")
        return logits, cache, seen

    def _decode_step(self, params, cache, token):
        return nnx.merge(self.graphdef, self.cast(params)).decode_step(token, cache)

    def _choose(self, logits, seen, done, key):
        """(token [B], seen, done): rows already done emit pad_id; EOS marks a row done."""
        token = jnp.where(done, self.pad_id, sample_next(logits, seen, key, self.settings)).astype(jnp.int32)
        seen = seen.at[jnp.arange(token.shape[0]), token].set(True)
        return token, seen, done | (token == self.eos_id)

    def stream(self, params, prompts: list[list[int]], key: jax.Array) -> Iterator[np.ndarray]:
        """The new tokens [B] of each step, as they are produced (EOS once, then pad_id, for a row
        that has stopped)."""
        n_new = self.settings.max_new_tokens
        tokens, start = left_pad(prompts, self.pad_id, self.length_bucket)
        logits, cache, seen = self.prefill(params, tokens, start, max_len=tokens.shape[1] + n_new)
        done = jnp.zeros((len(prompts),), bool)
        for t in range(n_new):
            token, seen, done = self.choose(logits, seen, done, jax.random.fold_in(key, t))
            yield np.asarray(token)
            if t + 1 == n_new or bool(np.all(np.asarray(done))):
                return
            logits, cache = self.decode_step(params, cache, token)

    def generate(self, params, prompts: list[list[int]], key: jax.Array) -> list[list[int]]:
        """The new tokens of every prompt, up to (not including) its EOS."""
        out: list[list[int]] = [[] for _ in prompts]
        stopped = [False] * len(prompts)
        for step in self.stream(params, prompts, key):
            for row, token in enumerate(step.tolist()):
                stopped[row] = stopped[row] or token == self.eos_id
                if not stopped[row]:
                    out[row].append(token)
        return out
