"""Choosing the next token from logits: repetition penalty, temperature, top-k, top-p (nucleus).

`sample_next` applies the `sample.*` settings (`SampleSettings`) in the order penalty →
temperature → top-k / top-p → draw (temperature 0: greedy argmax).
"""

import jax
import jax.numpy as jnp

from muse_jax.settings import SampleSettings


def filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """Set to −inf every logit outside the top-k and outside the smallest set whose probability ≥ top_p.

    top_k ≤ 0 and top_p ≥ 1 disable the respective filter. logits: [..., V].
    """
    neg_inf = jnp.finfo(logits.dtype).min
    if top_k > 0:
        kth = jnp.sort(logits, axis=-1)[..., -top_k][..., None]
        logits = jnp.where(logits < kth, neg_inf, logits)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # probability of strictly better tokens
        keep_sorted = mass_before < top_p  # always keeps the best token
        keep = jnp.put_along_axis(jnp.zeros_like(keep_sorted), order, keep_sorted, axis=-1, inplace=False)
        logits = jnp.where(keep, logits, neg_inf)
    return logits


def apply_repetition_penalty(logits: jax.Array, seen: jax.Array, penalty: float) -> jax.Array:
    """For tokens already in the context (seen [..., V] bool), with penalty p:

        l ↦ l / p   if l > 0,      l ↦ l · p   if l ≤ 0,

    so p > 1 always lowers a seen token's logit (dividing a negative logit would raise it).
    """
    penalised = jnp.where(logits > 0, logits / penalty, logits * penalty)
    return jnp.where(seen, penalised, logits)


def sample_token(logits: jax.Array, key: jax.Array, temperature: float, top_k: int, top_p: float) -> jax.Array:
    """temperature 0 → greedy; otherwise a draw from softmax(filter(logits / temperature))."""
    if temperature <= 0:
        return jnp.argmax(logits, axis=-1)
    return jax.random.categorical(key, filter_logits(logits / temperature, top_k, top_p), axis=-1)


def sample_next(logits: jax.Array, seen: jax.Array, key: jax.Array, settings: SampleSettings) -> jax.Array:
    """The next token [...] from logits [..., V]: repetition penalty on `seen`, then `sample_token`."""
    if settings.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, seen, settings.repetition_penalty)
    return sample_token(logits, key, settings.temperature, settings.top_k, settings.top_p)
