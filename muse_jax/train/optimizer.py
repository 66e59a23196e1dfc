"""The default optimizer: global-norm clipping → AdamW under a warmup + cosine schedule."""

import jax
import ml_collections
import optax


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup 0 → lr over `warmup_steps`, then cosine to lr·min_lr_ratio at `total_steps`."""
    warmup = int(cfg.warmup_steps)
    if not 0 <= warmup < total_steps:
        raise ValueError(f"optim.warmup_steps must be in [0, train.steps), got {warmup}")
    peak, end = cfg.lr, cfg.lr * cfg.min_lr_ratio
    cosine = optax.cosine_decay_schedule(peak, decay_steps=total_steps - warmup, alpha=end / peak)
    if warmup == 0:
        return cosine
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), cosine], [warmup])


def decay_mask(params):
    """Weight decay on matrices (Linear kernels, embeddings) only, not on norms, biases or z."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) in ("kernel", "embedding"), params
    )


def build_optimizer(cfg: ml_collections.ConfigDict, total_steps: int):
    """Returns (tx, schedule)."""
    schedule = learning_rate_schedule(cfg, total_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask),
    )
    return tx, schedule
