"""Train state and the functional train / eval steps (plain `jax.jit`, state donated)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any  # pure dict of parameter arrays (nnx.to_pure_dict)
    opt_state: Any
    rng: jax.Array  # uint32 [2] raw PRNG key


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over tokens of −log softmax(logits)[target]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule):
    def loss_fn(params, batch):
        logits = nnx.merge(graphdef, params)(batch["inputs"])
        return token_cross_entropy(logits, batch["targets"])

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
        rng, _ = jax.random.split(state.rng)
        return TrainState(state.step + 1, params, opt_state, rng), metrics

    return jax.jit(train_step, donate_argnums=(0,))


def make_eval_step(graphdef: nnx.GraphDef):
    @jax.jit
    def eval_step(params, batch) -> jax.Array:
        logits = nnx.merge(graphdef, params)(batch["inputs"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).sum()

    return eval_step


def evaluate(eval_step, params, batches) -> dict:
    """Token-weighted mean loss over fixed validation batches, and its perplexity."""
    total = sum(float(eval_step(params, b)) for b in batches)
    count = sum(b["targets"].size for b in batches)
    val_loss = total / count
    return {"val_loss": val_loss, "val_ppl": float(jnp.exp(val_loss))}
