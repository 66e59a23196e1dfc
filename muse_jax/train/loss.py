"""The training loss: (label-smoothed) cross-entropy of the tied head's logits, whole or by chunks.

Whole (`train.loss_chunk_tokens = 0`): the model's logits [B, N, V] exist at once, and the
backward pass keeps them and their softmax (about 8·B·N·V bytes in float32).

Chunked (`train.loss_chunk_tokens = c > 0`, `chunked_cross_entropy`): the head and the loss run
over slices of w = max(1, ⌊c / B⌋) positions of every row (c tokens per slice, and each slice is
split over the devices like the batch), one slice at a time inside `lax.scan`, each under
`jax.checkpoint`: the forward keeps only the per-slice sums, the backward recomputes a slice's
logits to get its gradient. At most one slice of logits, [B, w, V], is live. Same value as the
whole loss (sums in float32, in another order). The head's parameters enter the scan in float32,
so the sum of their per-slice gradients is kept in float32 (under bfloat16 compute each slice's
part is a bfloat16 matmul, as the whole head's is; only the running sum would lose more).
"""

import functools

import jax
import jax.numpy as jnp
import optax


def token_losses(logits: jax.Array, targets: jax.Array, label_smoothing: float):
    """(objective, nll) per token. With α = label_smoothing and targets q = (1 − α)·onehot + α/V
    (as `optax.smooth_labels`), without building the one-hot:
        objective = (1 − α)·nll + α·(logsumexp(logits) − mean_v logits_v);
    nll is the plain cross-entropy, comparable with val_loss."""
    logits = logits.astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    if label_smoothing == 0:
        return nll, nll
    uniform = jax.nn.logsumexp(logits, axis=-1) - logits.mean(axis=-1)
    return (1 - label_smoothing) * nll + label_smoothing * uniform, nll


def smoothed_cross_entropy(logits: jax.Array, targets: jax.Array, label_smoothing: float,
                           loss_mask: jax.Array | None = None):
    """(objective, nll) of `token_losses`, both means over tokens; with `loss_mask` m (a synthetic
    task's answer positions) the means are Σ m·x / max(Σ m, 1): only the masked tokens count."""
    objective, nll = token_losses(logits, targets, label_smoothing)
    if loss_mask is None:
        return objective.mean(), nll.mean()
    count = jnp.maximum(jnp.sum(loss_mask), 1.0)
    return jnp.sum(objective * loss_mask) / count, jnp.sum(nll * loss_mask) / count


def chunked_cross_entropy(readout, head_params, h: jax.Array, targets: jax.Array, chunk_tokens: int,
                          label_smoothing: float, loss_mask: jax.Array | None = None):
    """`smoothed_cross_entropy(readout(head_params, h), targets, label_smoothing, loss_mask)`
    without the whole logits: h [B, N, D], targets int [B, N]; slices of w = max(1, ⌊chunk_tokens / B⌋)
    positions, ⌊N / w⌋ of them scanned and the N mod w left as one more (module docstring)."""
    rows, n = targets.shape
    weights = jnp.ones(targets.shape, jnp.float32) if loss_mask is None else loss_mask.astype(jnp.float32)
    width = max(1, chunk_tokens // rows)
    scanned, rest = divmod(n, width)
    dtypes = jax.tree.map(lambda x: x.dtype, head_params)
    wide = jax.tree.map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, head_params)

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def slice_sums(wide, h_slice, t_slice, w_slice):
        params = jax.tree.map(lambda x, dtype: x.astype(dtype), wide, dtypes)  # exact: a float32 round trip
        objective, nll = token_losses(readout(params, h_slice), t_slice, label_smoothing)
        return jnp.sum(objective * w_slice), jnp.sum(nll * w_slice)

    def add(total, slice_):
        return jax.tree.map(jnp.add, total, slice_sums(wide, *slice_))

    def by_slice(x):  # [B, scanned·w, ...] → [scanned, B, w, ...]
        return jnp.moveaxis(x[:, : scanned * width].reshape(rows, scanned, width, *x.shape[2:]), 1, 0)

    total = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
    if scanned:
        total, _ = jax.lax.scan(lambda acc, s: (add(acc, s), None), total,
                                (by_slice(h), by_slice(targets), by_slice(weights)))
    if rest:
        total = add(total, (h[:, scanned * width:], targets[:, scanned * width:], weights[:, scanned * width:]))
    objective, nll = total
    count = float(rows * n) if loss_mask is None else jnp.maximum(jnp.sum(weights), 1.0)
    return objective / count, nll / count
