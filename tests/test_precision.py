"""Mixed precision: bfloat16 compute on float32 weights trains close to float32; the BK resolvent
stays complex64; param_dtype stores the layer weights, and only those."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from muse_jax.model.bk_mixer import BKMixer
from muse_jax.model.linear import LinearSpec
from muse_jax.train.precision import cast_weights
from muse_jax.train.state import TrainSetup

VOCAB = 256


def batches(n: int, batch: int, seq_len: int) -> list[dict]:
    tokens = np.random.default_rng(0).integers(0, VOCAB, (n, batch, seq_len + 1)).astype(np.int32)
    return [{"inputs": t[:, :-1], "targets": t[:, 1:]} for t in tokens]


def losses(cfg, steps: int = 3) -> tuple[list[float], TrainSetup, object]:
    setup = TrainSetup(cfg, VOCAB)
    state = setup.create()
    out = []
    for b in batches(steps, cfg.train.batch_size, cfg.train.seq_len):
        state, metrics = setup.train_step(state, setup.place_batch(b))
        out.append(float(metrics["loss"]))
    return out, setup, state


def test_bfloat16_compute_trains_close_to_float32(tiny_config):
    reference, _, _ = losses(tiny_config)
    tiny_config.train.compute_dtype = "bfloat16"
    got, setup, state = losses(tiny_config)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, reference, rtol=5e-3)
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}  # master weights
    b = batches(1, tiny_config.train.batch_size, tiny_config.train.seq_len)[0]
    hlo = setup.train_step.lower(setup.abstract, setup.place_batch(b)).as_text()
    assert "bf16" in hlo and "dot_general" in hlo


def test_param_dtype_stores_the_layer_weights_only(tiny_config):
    tiny_config.train.param_dtype = "bfloat16"
    setup = TrainSetup(tiny_config, VOCAB)
    dtypes = {jax.tree_util.keystr(p): x.dtype for p, x in jax.tree_util.tree_leaves_with_path(setup.abstract.params)}
    assert dtypes["['embed']['table']['embedding']"] == jnp.bfloat16
    assert dtypes["['blocks']['ffn']['up']['kernel']"] == jnp.bfloat16
    assert dtypes["['blocks']['mixer']['energy']"] == dtypes["['blocks']['mixer']['width']"] == jnp.float32


def test_bk_resolvent_stays_complex64_under_bfloat16(tiny_config):
    mixer = BKMixer(32, tiny_config.model.bk, LinearSpec(), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(mixer)
    half = nnx.merge(graphdef, cast_weights(nnx.to_pure_dict(params), jnp.bfloat16))
    h = jax.random.normal(jax.random.key(0), (2, 16, 32), jnp.bfloat16)
    y, g = half(h)
    assert y.dtype == jnp.bfloat16 and g.dtype == jnp.complex64
    assert half.energy[...].dtype == half.width[...].dtype == jnp.float32
