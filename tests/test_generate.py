"""Generation: prefill + recurrent decoding equals the parallel forward (BK with every component,
the Transformer with its KV cache); padding is invisible; sampling is seeded and filtered."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_model import COMPONENTS, set_model_keys

from muse_jax.generate import Generator, left_pad
from muse_jax.model.lm import LanguageModel
from muse_jax.sampling import apply_repetition_penalty, sample_next
from muse_jax.settings import ModelSettings, SampleSettings

VOCAB = 97
GREEDY = SampleSettings(max_new_tokens=8, temperature=0.0)
VARIANTS = {
    "bk": {},
    "bk_all": COMPONENTS["all"],  # Prime-Bump, LAP, semiseparable, scattering router, hyperbolic TT head,
    #                               low-rank, ternary (configs/tiny_ja_all.py)
    "bk_learned_router_lap_off_associative": {**COMPONENTS["learned_router"], **COMPONENTS["lap_off"],
                                              **COMPONENTS["hyperbolic"], "bk.semiseparable": True,
                                              "bk.scan_impl": "associative"},
    "transformer": {"kind": "transformer", **COMPONENTS["learned_router"]},
}


def build(tiny_config, variant: str):
    """(graphdef, params) of a tiny model of the variant ("a.b" keys set under tiny_config.model)."""
    cfg = set_model_keys(tiny_config.model, VARIANTS[variant])
    graphdef, state = nnx.split(LanguageModel(ModelSettings.from_config(cfg), VOCAB, rngs=nnx.Rngs(0)))
    return graphdef, nnx.to_pure_dict(state)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prefill_then_decode_equals_the_parallel_forward(tiny_config, variant):
    graphdef, params = build(tiny_config, variant)
    n, n_prompt = 40, 13
    tokens = jax.random.randint(jax.random.key(1), (2, n), 0, VOCAB)
    expected = np.asarray(jax.jit(lambda p, t: nnx.merge(graphdef, p)(t))(params, tokens))
    gen = Generator(graphdef, GREEDY)
    start = jnp.zeros((2,), jnp.int32)
    logits, cache, _ = gen.prefill(params, tokens[:, :n_prompt], start, max_len=n)
    got = [logits]
    for i in range(n_prompt, n):
        logits, cache = gen.decode_step(params, cache, tokens[:, i])
        got.append(logits)
    np.testing.assert_allclose(np.stack(got, 1), expected[:, n_prompt - 1:], rtol=1e-4, atol=1e-4)


def test_bk_decode_state_does_not_grow_with_the_context(tiny_config):
    graphdef, params = build(tiny_config, "bk_all")
    gen = Generator(graphdef, GREEDY)

    def shapes(n):  # traced, not run
        tokens = jnp.ones((1, n), jnp.int32)
        _, cache, _ = jax.eval_shape(lambda p, t: gen.prefill(p, t, jnp.zeros((1,), jnp.int32), max_len=4 * n),
                                     params, tokens)
        return jax.tree.map(lambda x: x.shape, cache["layers"])

    assert shapes(8) == shapes(64)
    c, layers = tiny_config.model.bk.channels, tiny_config.model.n_layers
    assert shapes(8) == {"g": (layers, 1, c), "s": (layers, 1, c)}


@pytest.mark.parametrize("variant", ["bk_all", "transformer"])
def test_a_batch_of_prompts_decodes_like_each_prompt_alone(tiny_config, variant):
    """Left padding reaches neither the BK state nor attention: same logits, same greedy tokens."""
    graphdef, params = build(tiny_config, variant)
    prompts = [[5, 17, 3, 42, 8], [9, 1, 60, 33, 2, 7, 7, 21, 4, 50, 11]]
    gen = Generator(graphdef, GREEDY, length_bucket=1)
    key = jax.random.key(0)
    batch = gen.generate(params, prompts, key)
    alone = [gen.generate(params, [p], key)[0] for p in prompts]
    assert batch == alone and all(len(out) == GREEDY.max_new_tokens for out in batch)
    tokens, start = left_pad(prompts, 0)  # the shapes generate compiled
    assert tokens.shape == (2, 11) and list(start) == [6, 0]
    padded_logits = gen.prefill(params, tokens, start, max_len=11 + GREEDY.max_new_tokens)[0]
    for row, p in enumerate(prompts):
        single = gen.prefill(params, jnp.asarray([p]), jnp.zeros((1,), jnp.int32),
                             max_len=len(p) + GREEDY.max_new_tokens)[0]
        np.testing.assert_allclose(padded_logits[row], single[0], rtol=1e-4, atol=1e-4)
    assert left_pad(prompts, 0, bucket=16)[0].shape == (2, 16)


def test_generation_stops_at_eos_and_is_seeded(tiny_config):
    graphdef, params = build(tiny_config, "bk")
    prompt = [[5, 17, 3, 42]]
    free = Generator(graphdef, GREEDY, eos_id=VOCAB + 1).generate(params, prompt, jax.random.key(0))[0]
    stop = free.index(free[-1])  # the first time the last token appears
    assert Generator(graphdef, GREEDY, eos_id=free[stop]).generate(params, prompt, jax.random.key(0))[0] == free[:stop]

    sampled = Generator(graphdef, SampleSettings(max_new_tokens=12, temperature=1.5, top_k=20, top_p=0.95,
                                                   repetition_penalty=1.3), eos_id=VOCAB + 1)
    runs = [sampled.generate(params, prompt * 2, jax.random.key(seed))[0] for seed in (7, 7, 8)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_repetition_penalty_lowers_seen_logits_of_either_sign():
    logits = jnp.array([2.0, -2.0, 2.0, -2.0])
    seen = jnp.array([True, True, False, False])
    np.testing.assert_allclose(apply_repetition_penalty(logits, seen, 2.0), [1.0, -4.0, 2.0, -2.0])


@pytest.mark.parametrize("top_k, top_p", [(3, 1.0), (0, 0.5), (5, 0.3)])
def test_top_k_top_p_never_emit_outside_the_set(top_k, top_p):
    logits = jax.random.normal(jax.random.key(3), (64, 50)) * 3
    seen = jax.random.bernoulli(jax.random.key(4), 0.3, (64, 50))
    settings = SampleSettings(temperature=1.0, top_k=top_k, top_p=top_p, repetition_penalty=1.5)
    penalised = np.asarray(apply_repetition_penalty(logits, seen, 1.5))
    order = np.argsort(-penalised, axis=-1)
    probs = np.take_along_axis(np.asarray(jax.nn.softmax(penalised)), order, -1)
    allowed_count = np.minimum(top_k if top_k > 0 else 50, 1 + np.sum(np.cumsum(probs, -1)[:, :-1] < top_p, -1))
    draws = jax.vmap(lambda k: sample_next(logits, seen, k, settings))(jax.random.split(jax.random.key(5), 200))
    for row in range(64):  # the nucleus is computed after top-k, so it is at most the top-k set
        allowed = set(order[row, : allowed_count[row]].tolist())
        assert set(np.asarray(draws[:, row]).tolist()) <= allowed
