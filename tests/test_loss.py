"""`train.loss_chunk_tokens`: the tied head and the loss by slices of tokens give the loss and the
gradients of the whole loss (float32, every head, smoothing, router losses, a token count the
slices do not divide), the whole logits never exist, and the compiled step needs less memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_jax.settings import Settings
from muse_jax.train.dry_run import memory_fields
from muse_jax.train.loss import chunked_cross_entropy, smoothed_cross_entropy
from muse_jax.train.state import TrainSetup

VOCAB = 97
ROWS, POSITIONS = 4, 13


def batch(rows: int = ROWS, positions: int = POSITIONS) -> dict:
    tokens = jax.random.randint(jax.random.key(3), (rows, positions + 1), 0, VOCAB)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}


def setup_for(tiny_config, chunk_tokens: int, vocab: int = VOCAB) -> TrainSetup:
    tiny_config.train.loss_chunk_tokens = chunk_tokens
    return TrainSetup(Settings.from_config(tiny_config), vocab)


@pytest.mark.parametrize("masked", [False, True])
def test_chunked_cross_entropy_equals_the_whole_on_a_plain_head(masked):
    """A linear head, 3 rows × 11 positions in slices of 2 positions (5 scanned, 1 left over);
    with a loss mask (a synthetic task's answers) the same masked mean."""
    h = jax.random.normal(jax.random.key(0), (3, 11, 8))
    table = jax.random.normal(jax.random.key(1), (VOCAB, 8))
    targets = jax.random.randint(jax.random.key(2), (3, 11), 0, VOCAB)
    mask = (jax.random.uniform(jax.random.key(3), (3, 11)) < 0.3).astype(jnp.float32) if masked else None

    def whole(table, h):
        return smoothed_cross_entropy(h @ table.T, targets, 0.2, mask)

    def chunked(table, h):
        return chunked_cross_entropy(lambda p, x: x @ p["e"].T, {"e": table}, h, targets, 6, 0.2, mask)

    np.testing.assert_allclose(jax.jit(chunked)(table, h), jax.jit(whole)(table, h), rtol=1e-6)
    g_whole = jax.jit(jax.grad(lambda *a: whole(*a)[0], argnums=(0, 1)))(table, h)
    g_chunked = jax.jit(jax.grad(lambda *a: chunked(*a)[0], argnums=(0, 1)))(table, h)
    for a, b in zip(g_chunked, g_whole):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# (model keys, loss_chunk_tokens): 20 tokens over 4 rows = slices of 5 positions, 2 scanned and 3
# left over; 3 → slices of 1 position, all scanned. One layer: the head is what is tested.
CASES = {
    "bk_euclidean": ({"kind": "bk", "output_mult": 2.0}, 20),
    "transformer_hyperbolic_learned_router": ({"kind": "transformer", "embedding": "hyperbolic",
                                               "router": "learned", "router_top_k": 2}, 3),
}


@pytest.mark.parametrize("name", CASES)
def test_chunked_loss_and_gradients_equal_the_whole_loss(tiny_config, name):
    keys, chunk_tokens = CASES[name]
    for key, value in keys.items():
        tiny_config.model[key] = value
    tiny_config.model.n_layers = 1
    tiny_config.train.label_smoothing = 0.1
    whole_setup = setup_for(tiny_config, 0)
    params = whole_setup.initial_params()
    loss, metrics, grads = jax.jit(whole_setup.phases.gradients)(params, batch())
    c_loss, c_metrics, c_grads = jax.jit(setup_for(tiny_config, chunk_tokens).phases.gradients)(params, batch())
    np.testing.assert_allclose(c_loss, loss, rtol=1e-6)  # the logged plain NLL
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), c_metrics, metrics)
    flat, c_flat = jax.tree.leaves(grads), jax.tree.leaves(c_grads)
    assert len(flat) == len(c_flat) and all(np.any(g != 0) for g in flat)
    for a, b in zip(c_flat, flat):  # 1e-5 of each leaf's largest entry
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def logit_shapes(setup: TrainSetup) -> set:
    """The shapes of every value of the traced gradients phase whose last axis is the vocabulary."""
    from test_precision import equations

    jaxpr = jax.make_jaxpr(setup.phases.gradients)(setup.param_shapes, batch())
    return {tuple(v.aval.shape) for eqn in equations(jaxpr.jaxpr) for v in eqn.outvars
            if getattr(v.aval, "shape", ()) and v.aval.shape[-1] == VOCAB}


def test_the_whole_logits_never_exist_when_chunked(tiny_config):
    assert (ROWS, POSITIONS, VOCAB) in logit_shapes(setup_for(tiny_config, 0))  # so the test can fail
    chunked = logit_shapes(setup_for(tiny_config, 20))
    assert (ROWS, 5, VOCAB) in chunked and (ROWS, 3, VOCAB) in chunked  # the scanned slices, the rest
    assert (ROWS, POSITIONS, VOCAB) not in chunked


def test_chunking_lowers_the_compiled_memory_of_the_step(tiny_config):
    """At a vocabulary where the logits dominate (4 × 32 tokens × 8192), the temporaries of the
    forward and backward pass fall by more than the whole logits' float32 bytes once the head runs
    in slices of 16 tokens."""
    t = tiny_config.train
    tiny_config.model.n_layers = 1

    def temp_bytes(chunk_tokens: int) -> int:
        setup = setup_for(tiny_config, chunk_tokens, vocab=8192)
        tokens = jax.ShapeDtypeStruct((t.batch_size, t.seq_len), jnp.int32)
        lowered = jax.jit(setup.phases.gradients).lower(setup.param_shapes, {"inputs": tokens, "targets": tokens})
        return memory_fields(lowered.compile())["temp_bytes"]

    logits_bytes = 4 * t.batch_size * t.seq_len * 8192
    assert temp_bytes(0) - temp_bytes(16) > logits_bytes
