"""Train state and the functional train / eval steps (plain `jax.jit`, state donated).

One call of the train step is one optimizer step. Its batch holds `train.batch_size` sequences;
with `train.grad_accum_steps = k` they are split into k consecutive micro-batches of
batch_size / k rows, whose gradients are accumulated by `lax.scan` inside the same jitted step
(so only one micro-batch of activations is live at a time) and averaged before the optimizer.

Placement: given `StepShardings` (from `muse_jax.train.state`), the step is jitted with explicit
in/out shardings — the state as the sharding rule of `sharding.py` places it, the batch split
along (data, fsdp), metrics replicated — and donates the state. One device is the same path.
Host offload (MaxText's way): the parts of the state kept in pinned host memory are brought to
the device inside the jit (`jax.device_put`) when the step needs them — params at the start,
the optimizer state and the EMA after the backward pass — and sent back at its end.

Precision: the loss function casts the parameters the model allows (`ParamRoles.cast`) to
`train.compute_dtype` before `nnx.merge` (`precision.py`); gradients come back in the stored dtype.

Loss: cross-entropy of the tied head (`loss.py`): of the whole logits, or, with
`train.loss_chunk_tokens`, of slices of tokens whose logits are recomputed in the backward pass.
"""

from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from muse_jax.model.router import routing_metrics
from muse_jax.settings import TrainSettings
from muse_jax.train.loss import chunked_cross_entropy, smoothed_cross_entropy
from muse_jax.train.optimizer import optimizer_metrics
from muse_jax.train.precision import Precision, cast_weights


class StepShardings(NamedTuple):
    state: Any  # TrainState of NamedShardings: where the state lives between steps
    device_state: Any  # the same in device memory: where the step works on it (≠ state when offloaded)
    batch: NamedSharding  # [B, ...] batches, split along (data, fsdp)
    replicated: NamedSharding  # metrics and the eval loss


def in_host_memory(shardings) -> bool:
    """Whether any leaf of a pytree of shardings is placed in pinned host memory."""
    return any(s.memory_kind == "pinned_host" for s in jax.tree.leaves(shardings))


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: train steps taken (= batches consumed, skipped ones included)
    params: Any  # pure dict of parameter arrays (nnx.to_pure_dict)
    opt_state: Any
    rng: jax.Array  # uint32 [2] raw PRNG key
    ema_params: Any  # EMA of params (train.ema_decay > 0), else None


def split_micro_batches(batch: dict, num_micro: int, sharding: NamedSharding | None = None) -> dict:
    """[B, ...] → [k, B/k, ...]: micro-batch i holds rows i·B/k … (i+1)·B/k − 1. With the batch's
    `sharding`, every micro-batch is split over the same devices (when B/k divides), so each
    device works on every micro-batch instead of on a block of them."""

    def split(x):
        if x.shape[0] % num_micro:
            raise ValueError(f"a batch of {x.shape[0]} rows does not split into {num_micro} micro-batches")
        micro = x.reshape(num_micro, x.shape[0] // num_micro, *x.shape[1:])
        if sharding is None or num_micro == 1 or (x.shape[0] // num_micro) % sharding.num_devices:
            return micro
        return jax.lax.with_sharding_constraint(micro, sharding.update(spec=PartitionSpec(None, *sharding.spec)))

    return jax.tree.map(split, batch)


def accumulate_gradients(loss_fn: Callable, params, batch: dict, num_micro: int,
                         batch_sharding: NamedSharding | None = None):
    """Mean of (objective, aux, ∇objective) over `num_micro` equal micro-batches; with a
    token-mean loss this equals the full-batch value (with a loss mask, when every micro-batch
    holds as many masked tokens: the synthetic tasks have a fixed number of answers per row). `loss_fn(params, micro) → (objective, aux)`,
    aux a pytree of float arrays (here (nll, the model's routing metrics))."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def micro_step(carry, micro):
        (objective, nll), grads = grad_fn(params, micro)
        return jax.tree.map(jnp.add, carry, (objective, nll, grads)), None

    micro_batches = split_micro_batches(batch, num_micro, batch_sharding)
    shapes = jax.eval_shape(loss_fn, params, jax.tree.map(lambda x: x[0], micro_batches))  # (objective, aux)
    zeros = (*jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), optax.tree.zeros_like(params))
    total, _ = jax.lax.scan(micro_step, zeros, micro_batches)
    return jax.tree.map(lambda x: x / num_micro, total)


def ema_update(ema, params, decay: float, step: jax.Array):
    """ema ← d·ema + (1 − d)·params with d = min(decay, (1 + t) / (10 + t)), so early averages
    are not dominated by the initialisation (TensorFlow's ExponentialMovingAverage rule)."""
    t = step.astype(jnp.float32)
    d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    return optax.incremental_update(params, ema, 1.0 - d)


class StepPhases(NamedTuple):
    """The two halves of a train step (`make_step_phases`); the dry run measures each alone."""

    init_state: Callable  # (params, rng) → TrainState
    gradients: Callable  # (params, batch) → (loss, model metrics, grads): forward + backward, all micro-batches
    update: Callable  # (state, grads, loss) → (new state, metrics): optimizer, params, EMA, step, rng


def make_step_phases(graphdef: nnx.GraphDef, tx: optax.GradientTransformationExtraArgs, train: TrainSettings,
                     cast_mask, batch_sharding: NamedSharding | None = None) -> StepPhases:
    """Uses `train.grad_accum_steps`, `train.label_smoothing`, `train.loss_chunk_tokens`,
    `train.ema_decay` and the compute dtype; `cast_mask` (`ParamRoles.cast`) names the parameters
    cast to it."""
    num_micro, label_smoothing, ema_decay = train.grad_accum_steps, train.label_smoothing, train.ema_decay
    chunk_tokens = train.loss_chunk_tokens
    compute_dtype = Precision.of(train).compute_dtype

    def init_state(params, rng: jax.Array) -> TrainState:
        ema = jax.tree.map(jnp.copy, params) if ema_decay > 0 else None
        return TrainState(jnp.array(0, jnp.int32), params, tx.init(params), rng, ema)

    def loss_fn(params, micro):
        # The model's aux_loss (router load balancing; 0 without a learned router) joins the objective.
        model = nnx.merge(graphdef, cast_weights(params, compute_dtype, cast_mask))
        if chunk_tokens:  # the head by slices of tokens, never the whole logits (loss.py)
            h, model_aux = model.features_with_aux(micro["inputs"])
            objective, nll = chunked_cross_entropy(*model.readout_function(), h, micro["targets"], chunk_tokens,
                                                   label_smoothing, micro.get("loss_mask"))
        else:
            logits, model_aux = model.forward_with_aux(micro["inputs"])
            objective, nll = smoothed_cross_entropy(logits, micro["targets"], label_smoothing, micro.get("loss_mask"))
        return objective + model_aux["aux_loss"], (nll, routing_metrics(model_aux))

    def gradients(params, batch):
        _, (loss, model_metrics), grads = accumulate_gradients(loss_fn, params, batch, num_micro, batch_sharding)
        return loss, model_metrics, grads

    def update(state: TrainState, grads, loss) -> tuple[TrainState, dict]:
        updates, opt_state = tx.update(grads, state.opt_state, state.params, loss=loss)
        params = optax.apply_updates(state.params, updates)
        ema = ema_update(state.ema_params, params, ema_decay, state.step) if ema_decay > 0 else None
        rng, _ = jax.random.split(state.rng)
        metrics = {"grad_norm_raw": optax.tree.norm(grads), **optimizer_metrics(opt_state)}
        return TrainState(state.step + 1, params, opt_state, rng, ema), metrics

    return StepPhases(init_state, gradients, update)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformationExtraArgs, train: TrainSettings,
                    cast_mask, shardings: StepShardings | None = None):
    """Returns (init_state(params, rng) → TrainState, jitted train_step(state, batch) → (state, metrics)):
    the phases of `make_step_phases`, with the offloaded parts of the state brought in between.
    Without `shardings` the step is jitted without placement (tests of the step itself)."""
    phases = make_step_phases(graphdef, tx, train, cast_mask, shardings.batch if shardings is not None else None)
    offloaded = shardings is not None and in_host_memory(shardings.state)

    def to_device(part: str, tree, after):
        """An offloaded part of the state brought to the device once `after` is computed (the
        barrier keeps XLA from fetching it earlier, while the activations are live)."""
        if not offloaded or tree is None or not in_host_memory(getattr(shardings.state, part)):
            return tree
        _, tree = jax.lax.optimization_barrier((after, tree))
        return jax.device_put(tree, getattr(shardings.device_state, part))

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
        params = to_device("params", state.params, state.step)
        loss, model_metrics, grads = phases.gradients(params, batch)
        # the optimizer state and the EMA only for the update, after the backward pass
        state = state._replace(params=params, opt_state=to_device("opt_state", state.opt_state, grads),
                               ema_params=to_device("ema_params", state.ema_params, grads))
        new_state, update_metrics = phases.update(state, grads, loss)
        if offloaded:  # the offloaded parts back to pinned host memory
            new_state = jax.device_put(new_state, shardings.state)
        return new_state, {"loss": loss, **update_metrics, **model_metrics}

    if shardings is None:
        return phases.init_state, jax.jit(train_step, donate_argnums=(0,))
    return phases.init_state, jax.jit(train_step, in_shardings=(shardings.state, shardings.batch),
                                      out_shardings=(shardings.state, shardings.replicated), donate_argnums=(0,))


def make_eval_step(graphdef: nnx.GraphDef, param_shardings=None, batch_sharding: NamedSharding | None = None,
                   compute_dtype=None, cast_mask=None):
    """jitted eval_step(params, batch) → {"nll", "count", "correct"}, each float32 [N]: per position
    n, summed over the batch's rows, the token NLL, the number of counted targets and how many
    of them are the argmax — counted targets are all of them, or those of `batch["loss_mask"]`.
    The parameters of `cast_mask` are cast to `compute_dtype` (None: as stored); with shardings,
    placed explicitly (params in device memory, the batch as `batch_sharding`, sums replicated)."""

    def eval_step(params, batch) -> dict:
        if compute_dtype is not None:
            params = cast_weights(params, compute_dtype, cast_mask)
        logits = nnx.merge(graphdef, params)(batch["inputs"])
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        mask = batch.get("loss_mask", jnp.ones_like(nll))
        correct = (jnp.argmax(logits, axis=-1) == batch["targets"]).astype(jnp.float32)
        return {"nll": jnp.sum(nll * mask, axis=0), "count": jnp.sum(mask, axis=0),
                "correct": jnp.sum(correct * mask, axis=0)}

    if param_shardings is None:
        return jax.jit(eval_step)
    return jax.jit(eval_step, in_shardings=(param_shardings, batch_sharding),
                   out_shardings=batch_sharding.update(spec=PartitionSpec()))


def bucket_sums(per_position: np.ndarray, buckets: int) -> np.ndarray:
    """[N] → [buckets]: position n goes to bucket ⌊n · buckets / N⌋ (equal buckets when N divides)."""
    n = per_position.shape[0]
    return np.bincount(np.arange(n) * buckets // n, weights=per_position, minlength=buckets)


def ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def evaluate(step_for_rows: Callable[[int], Callable], params, batches: Iterable[dict],
             position_buckets: int = 0) -> dict:
    """Mean loss over the counted targets of `batches` (consumed one at a time, so an iterator keeps
    one on the device) and its perplexity; with a loss mask also `val_accuracy` (argmax = target
    on the answers). `step_for_rows(rows)`: the eval step for batches of that size. With
    `position_buckets` = P (all batches one length N): `by_position`, the same per bucket of N/P
    positions (null where a bucket counts no target; `accuracy` with a loss mask only)."""
    sums, masked = None, False
    for b in batches:
        masked = masked or "loss_mask" in b
        out = {k: np.asarray(v, np.float64) for k, v in step_for_rows(b["inputs"].shape[0])(params, b).items()}
        sums = out if sums is None else {k: sums[k] + out[k] for k in sums}
    val_loss = float(sums["nll"].sum() / sums["count"].sum())
    result = {"val_loss": val_loss, "val_ppl": float(np.exp(val_loss))}
    if masked:
        result["val_accuracy"] = float(sums["correct"].sum() / sums["count"].sum())
    if position_buckets:
        nll, count, correct = (bucket_sums(sums[k], position_buckets) for k in ("nll", "count", "correct"))
        n = sums["nll"].shape[0]
        result["by_position"] = {
            "bucket_start": [-(-i * n // position_buckets) for i in range(position_buckets)],
            "targets": [int(c) for c in count], "loss": [ratio(a, c) for a, c in zip(nll, count)]}
        if masked:
            result["by_position"]["accuracy"] = [ratio(a, c) for a, c in zip(correct, count)]
    return result
