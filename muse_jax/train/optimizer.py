"""The optimizer of a run, built from `OptimSettings`, and the metrics it reports.

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

Which parameters are decayed and which learning-rate group each is in comes from the model
(`model/param_roles.py`). The schedules count applied optimizer steps: a skipped step leaves
every count unchanged.
"""

import jax
import optax
from flax import nnx

from muse_jax.model.param_roles import ParamRoles, roles
from muse_jax.optim.bk_hyper_sgd import bk_hyper_sgd, path_name
from muse_jax.optim.grad_norm import record_clipped_norm
from muse_jax.optim.gradient_aligner import gradient_aligner
from muse_jax.optim.step_guard import skip_bad_steps
from muse_jax.optim.symplectic import symplectic_leapfrog
from muse_jax.optim.tsp_path import tsp_path
from muse_jax.optim.width_scaling import scale_by_multipliers, width_lr_multipliers
from muse_jax.settings import OptimSettings

# metric name in metrics.jsonl → state field (found with optax.tree.get), when present
OPTIONAL_METRICS = {
    "aligner/opposite_fraction": "opposite_fraction",
    "aligner/energy_removed": "energy_removed",
    "tsp/city": "city",
}


def learning_rate_schedule(peak: float, warmup: int, min_lr_ratio: float, total_steps: int) -> optax.Schedule:
    """Linear warmup 0 → peak over `warmup` steps, then cosine to peak·min_lr_ratio at `total_steps`."""
    cosine = optax.cosine_decay_schedule(peak, decay_steps=total_steps - warmup, alpha=min_lr_ratio)
    if warmup == 0:
        return cosine
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), cosine], [warmup])


def clip_threshold_schedule(during_warmup: float, after: float, warmup: int) -> optax.Schedule:
    """Global-norm clip threshold: `during_warmup` for the first `warmup` steps, then `after`."""
    if warmup == 0:
        return optax.constant_schedule(after)
    return optax.join_schedules([optax.constant_schedule(during_warmup), optax.constant_schedule(after)], [warmup])


def base_optimizer(optim: OptimSettings, decay_mask):
    """learning_rate → the GradientTransformation of `optim.name`."""
    if optim.name == "adamw":
        c = optim.adamw
        return lambda lr: optax.adamw(lr, b1=c.b1, b2=c.b2, weight_decay=c.weight_decay, mask=decay_mask)
    if optim.name == "symplectic":
        c = optim.symplectic
        return lambda lr: symplectic_leapfrog(lr, c.friction, c.precondition, c.precondition_decay)
    c = optim.bk_hyper_sgd
    kwargs = dict(
        momentum=c.momentum, weight_decay=c.weight_decay, decay_mask=decay_mask,
        poincare_params=c.poincare_params, poincare_lr_mult=c.poincare_lr_mult,
        orthogonal_params=c.orthogonal_params, orthogonal_lr_mult=c.orthogonal_lr_mult,
    )
    return lambda lr: bk_hyper_sgd(lr, **kwargs)


def parameter_groups(optim: OptimSettings, model: nnx.Module | None) -> tuple[ParamRoles | None, object]:
    """(the model's parameter roles, the width-aware scaling transform or None). Without a model
    (a bare optimizer for tests of its own) nothing is decayed and every parameter has one rate.
    With bk_hyper_sgd, every parameter's group is checked here (a pattern matching a parameter
    it cannot handle is a ConfigError from the settings)."""
    if model is None:
        return None, None
    param_roles = roles(model)
    if optim.name == "bk_hyper_sgd":
        shapes = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        jax.tree_util.tree_map_with_path(
            lambda path, x: optim.bk_hyper_sgd.group_of(path_name(path), tuple(x.shape)), shapes)
    if optim.lr_base_width == 0 and optim.embed_lr_mult == 1:
        return param_roles, None
    multipliers = width_lr_multipliers(param_roles.lr_group, model.d_model, optim.lr_base_width, optim.embed_lr_mult)
    return param_roles, scale_by_multipliers(multipliers)


def build_optimizer(optim: OptimSettings, total_steps: int, seed: int,
                    model: nnx.Module | None = None) -> optax.GradientTransformationExtraArgs:
    """The run's optimizer (see the module docstring); its `update` takes `loss=` as an extra
    argument. `model` (abstract is enough) tells which parameters are decayed and their groups."""
    param_roles, width = parameter_groups(optim, model)
    decay_mask = param_roles.decay if param_roles is not None else (lambda params: jax.tree.map(lambda _: False, params))
    make_base = base_optimizer(optim, decay_mask)
    a = optim.aligner
    aligner = gradient_aligner(a.min_alignment, a.strength, a.warmup, a.reference_decay) if a.enabled else None

    def update_rule(learning_rate, lr_scale, clip_threshold, clip_scale):
        return optax.chain(
            *([aligner] if aligner is not None else []),
            optax.clip_by_global_norm(clip_threshold * clip_scale),
            record_clipped_norm(),
            make_base(learning_rate * lr_scale),
            *([width] if width is not None else []),
        )

    tx = optax.inject_hyperparams(update_rule)(
        learning_rate=learning_rate_schedule(optim.peak_lr, optim.warmup_steps, optim.min_lr_ratio, total_steps),
        lr_scale=1.0,
        clip_threshold=clip_threshold_schedule(optim.grad_clip_warmup, optim.grad_clip, optim.clip_warmup_steps),
        clip_scale=1.0,
    )
    if optim.tsp.enabled:
        t = optim.tsp
        tx = tsp_path(tx, t.cities(), t.eval_interval, t.window_size, t.loss_cv_threshold, t.grad_cv_threshold,
                      t.epsilon, t.min_dwell, seed)
    return skip_bad_steps(tx, optim.grad_skip_threshold)


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
