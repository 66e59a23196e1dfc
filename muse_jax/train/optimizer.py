"""The optimizer of a run, built from `cfg.optim`, and the metrics it reports.

    skip_bad_steps(                                  non-finite or spiking ‖g‖ → step skipped, counted
      tsp_path(                                      (optim.tsp.enabled) sets lr_scale, clip_scale
        inject_hyperparams(update_rule)(             logged and steerable hyperparameters
          learning_rate = warmup + cosine schedule,  clip_threshold = clip warmup schedule,
          lr_scale = 1, clip_scale = 1)))
    update_rule = chain(gradient_aligner?,           (optim.aligner.enabled)
                        clip_by_global_norm(clip_threshold · clip_scale), record_clipped_norm,
                        adamw | symplectic_leapfrog | bk_hyper_sgd  (learning_rate · lr_scale),
                        scale_by_multipliers?)        (μP: D₀/D on hidden matrices, optim.embed_lr_mult
                                                       on the embedding, `optim/width_scaling.py`)

The schedules count applied optimizer steps: a skipped step leaves every count unchanged.
"""

import jax
import ml_collections
import optax
from flax import nnx

from muse_jax.config_error import ConfigError
from muse_jax.model.embedding import TT_CORE_NAMES
from muse_jax.optim.bk_hyper_sgd import bk_hyper_sgd
from muse_jax.optim.grad_norm import record_clipped_norm
from muse_jax.optim.gradient_aligner import gradient_aligner
from muse_jax.optim.step_guard import skip_bad_steps
from muse_jax.optim.symplectic import symplectic_leapfrog
from muse_jax.optim.tsp_path import tsp_path
from muse_jax.optim.width_scaling import scale_by_multipliers, width_lr_multipliers

OPTIMIZERS = ("adamw", "symplectic", "bk_hyper_sgd")

# metric name in metrics.jsonl → state field (found with optax.tree.get), when present
OPTIONAL_METRICS = {
    "aligner/opposite_fraction": "opposite_fraction",
    "aligner/energy_removed": "energy_removed",
    "tsp/city": "city",
}


def learning_rate_schedule(peak: float, warmup: int, min_lr_ratio: float, total_steps: int) -> optax.Schedule:
    """Linear warmup 0 → peak over `warmup` steps, then cosine to peak·min_lr_ratio at `total_steps`."""
    if not 0 <= warmup < total_steps:
        raise ConfigError(f"optim.warmup_steps must be in [0, train.steps), got {warmup}")
    cosine = optax.cosine_decay_schedule(peak, decay_steps=total_steps - warmup, alpha=min_lr_ratio)
    if warmup == 0:
        return cosine
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), cosine], [warmup])


def clip_threshold_schedule(during_warmup: float, after: float, warmup: int) -> optax.Schedule:
    """Global-norm clip threshold: `during_warmup` for the first `warmup` steps, then `after`."""
    if during_warmup <= 0 or after <= 0 or warmup < 0:
        raise ConfigError(f"optim.grad_clip_warmup, optim.grad_clip must be > 0 and optim.clip_warmup_steps >= 0, "
                          f"got {during_warmup}, {after}, {warmup}")
    if warmup == 0:
        return optax.constant_schedule(after)
    return optax.join_schedules([optax.constant_schedule(during_warmup), optax.constant_schedule(after)], [warmup])


DECAYED = ("kernel", "embedding", *TT_CORE_NAMES)


def decay_mask(params):
    """Weight decay on the weight matrices only: Linear kernels (low-rank factors included), the
    embedding table and its tensor-train cores (`model.embedding=htt`); not on norms, biases or
    the resolvent's energies and widths."""
    return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) in DECAYED, params)


def base_optimizer(cfg: ml_collections.ConfigDict):
    """(peak lr, learning_rate → GradientTransformation) for `cfg.name`, its keys read here once."""
    if cfg.name not in OPTIMIZERS:
        raise ConfigError(f"optim.name must be one of {OPTIMIZERS}, got {cfg.name!r}")
    if cfg.name == "adamw":
        c = cfg.adamw
        b1, b2, wd = c.b1, c.b2, c.weight_decay
        return c.lr, lambda lr: optax.adamw(lr, b1=b1, b2=b2, weight_decay=wd, mask=decay_mask)
    if cfg.name == "symplectic":
        c = cfg.symplectic
        friction, precondition, decay = c.friction, c.precondition, c.precondition_decay
        return c.lr, lambda lr: symplectic_leapfrog(lr, friction, precondition, decay)
    c = cfg.bk_hyper_sgd
    kwargs = dict(
        momentum=c.momentum, weight_decay=c.weight_decay, decay_mask=decay_mask,
        poincare_params=c.poincare_params, poincare_lr_mult=c.poincare_lr_mult,
        orthogonal_params=c.orthogonal_params, orthogonal_lr_mult=c.orthogonal_lr_mult,
    )
    return c.lr, lambda lr: bk_hyper_sgd(lr, **kwargs)


def aligner_from_config(cfg: ml_collections.ConfigDict):
    if not cfg.enabled:
        return None
    return gradient_aligner(cfg.min_alignment, cfg.strength, cfg.warmup, cfg.reference_decay)


def with_tsp_path(tx, cfg: ml_collections.ConfigDict, seed: int):
    if not cfg.enabled:
        return tx
    return tsp_path(
        tx, {"lr_scale": tuple(cfg.lr_scales), "clip_scale": tuple(cfg.clip_scales)},
        cfg.eval_interval, cfg.window_size, cfg.loss_cv_threshold, cfg.grad_cv_threshold,
        cfg.epsilon, cfg.min_dwell, seed,
    )


def width_scaling(cfg: ml_collections.ConfigDict, model: nnx.Module | None):
    """`scale_by_multipliers` for the per-group learning rates (`optim.lr_base_width`,
    `optim.embed_lr_mult`; μP), or None when every multiplier is 1. `model` (abstract is
    enough) supplies the parameter metadata and `d_model`."""
    base_width, embed_mult = int(cfg.lr_base_width), float(cfg.embed_lr_mult)
    if base_width < 0:
        raise ConfigError(f"optim.lr_base_width must be >= 0 (0 = off), got {base_width}")
    if not embed_mult > 0:
        raise ConfigError(f"optim.embed_lr_mult must be > 0, got {embed_mult}")
    if base_width == 0 and embed_mult == 1:
        return None
    if model is None:
        raise ValueError("optim.lr_base_width / optim.embed_lr_mult need the model to find its parameter groups")
    return scale_by_multipliers(width_lr_multipliers(nnx.state(model, nnx.Param), model.d_model, base_width,
                                                     embed_mult))


def build_optimizer(cfg: ml_collections.ConfigDict, total_steps: int, seed: int,
                    model: nnx.Module | None = None) -> optax.GradientTransformationExtraArgs:
    """The run's optimizer (see the module docstring); its `update` takes `loss=` as an extra argument."""
    peak_lr, make_base = base_optimizer(cfg)
    aligner = aligner_from_config(cfg.aligner)
    width = width_scaling(cfg, model)

    def update_rule(learning_rate, lr_scale, clip_threshold, clip_scale):
        return optax.chain(
            *([aligner] if aligner is not None else []),
            optax.clip_by_global_norm(clip_threshold * clip_scale),
            record_clipped_norm(),
            make_base(learning_rate * lr_scale),
            *([width] if width is not None else []),
        )

    tx = optax.inject_hyperparams(update_rule)(
        learning_rate=learning_rate_schedule(peak_lr, cfg.warmup_steps, cfg.min_lr_ratio, total_steps),
        lr_scale=1.0,
        clip_threshold=clip_threshold_schedule(cfg.grad_clip_warmup, cfg.grad_clip, cfg.clip_warmup_steps),
        clip_scale=1.0,
    )
    return skip_bad_steps(with_tsp_path(tx, cfg.tsp, seed), cfg.grad_skip_threshold)


def optimizer_metrics(opt_state) -> dict:
    """lr (schedule × TSP scale), clipped grad norm, skip count, and aligner / TSP statistics
    when those transforms are in the chain — all read from the optimizer state."""
    hyperparams = optax.tree.get(opt_state, "hyperparams")
    metrics = {
        "lr": hyperparams["learning_rate"] * hyperparams["lr_scale"],
        "grad_norm_clipped": optax.tree.get(opt_state, "grad_norm_clipped"),
        "skipped_steps": optax.tree.get(opt_state, "skipped_steps"),
    }
    for name, field in OPTIONAL_METRICS.items():
        value = optax.tree.get(opt_state, field)
        if value is not None:
            metrics[name] = value
    return metrics
