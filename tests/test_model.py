"""The language models: shapes, finiteness, causality (bk, transformer, every component) and parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from muse_jax.data.demo import DEMO_SOURCES
from muse_jax.model.lm import LanguageModel, count_params

VOCAB = 97


def tiny_model(tiny_config, kind: str) -> LanguageModel:
    tiny_config.model.kind = kind
    return LanguageModel(tiny_config.model, VOCAB, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("kind", ["bk", "transformer"])
def test_logits_shape_and_finite(tiny_config, kind):
    model = tiny_model(tiny_config, kind)
    tokens = jax.random.randint(jax.random.key(0), (2, 24), 0, VOCAB)
    logits = model(tokens)
    assert logits.shape == (2, 24, VOCAB) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("kind", ["bk", "transformer"])
def test_causality(tiny_config, kind):
    """Changing tokens after position t never changes the logits at positions ≤ t."""
    model = tiny_model(tiny_config, kind)
    n, t = 40, 17
    tokens = jax.random.randint(jax.random.key(1), (2, n), 0, VOCAB)
    changed = tokens.at[:, t + 1 :].set(jax.random.randint(jax.random.key(2), (2, n - t - 1), 0, VOCAB))
    a, b = model(tokens), model(changed)
    np.testing.assert_array_equal(np.asarray(a[:, : t + 1]), np.asarray(b[:, : t + 1]))
    assert not np.allclose(np.asarray(a[:, t + 1 :]), np.asarray(b[:, t + 1 :])), "the test could not fail"


def test_layers_are_stacked(tiny_config):
    """Block parameters carry a leading layer axis (scanned, so compile time is depth-independent)."""
    model = tiny_model(tiny_config, "bk")
    kernel = nnx.to_pure_dict(nnx.split(model)[1])["blocks"]["ffn"]["up"]["kernel"]
    assert kernel.shape[0] == tiny_config.model.n_layers


# ---------------------------------------------------------------------------
# The mathematical components (docs/architecture.md): each alone and all at once.
# ---------------------------------------------------------------------------


def all_on_overrides() -> dict:
    """The model keys configs/tiny_ja_all.py changes, with low_rank 4 (rank 32 saves nothing at width 32)."""
    from configs import tiny_ja, tiny_ja_all

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in d.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[prefix + key] = value
        return out

    base, full = flat(tiny_ja.get_config().model.to_dict()), flat(tiny_ja_all.get_config().model.to_dict())
    return {**{k: v for k, v in full.items() if base[k] != v}, "low_rank": 4}


ALL_ON = all_on_overrides()
COMPONENTS = {
    "prime_bump": {"bk.prime_bump": True},
    "lap_off": {"bk.lap_eta": 0.0},
    "semiseparable": {"bk.semiseparable": True},
    "scattering_router": {"router": "scattering"},
    "learned_router": {"router": "learned", "router_top_k": 2},
    "hyperbolic": {"embedding": "hyperbolic"},
    "htt": {"embedding": "htt"},
    "low_rank": {"low_rank": 4},
    "ternary": {"ternary": True},
    "all": ALL_ON,
}
_built: dict = {}


def set_model_keys(cfg, overrides: dict):
    """Set "a.b" keys of a model config in place; returns it."""
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return cfg


def component_config(tiny_config, name: str):
    return set_model_keys(tiny_config.model, COMPONENTS[name])


def component_model(tiny_config, name: str):
    """(graphdef, params, jitted forward_with_aux), built once per component for this module."""
    if name not in _built:
        model = LanguageModel(component_config(tiny_config, name), VOCAB, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)
        forward = jax.jit(lambda params, tokens: nnx.merge(graphdef, params).forward_with_aux(tokens))
        _built[name] = (graphdef, params, forward)
    return _built[name]


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_component_causality(tiny_config, name):
    """Each component alone, and all at once: logits at positions ≤ t ignore tokens after t."""
    _, params, forward = component_model(tiny_config, name)
    n, t = 40, 17
    tokens = jax.random.randint(jax.random.key(1), (2, n), 0, VOCAB)
    changed = tokens.at[:, t + 1 :].set(jax.random.randint(jax.random.key(2), (2, n - t - 1), 0, VOCAB))
    logits, aux = forward(params, jnp.concatenate([tokens, changed]))  # batch rows are independent
    a, b = np.asarray(logits[:2]), np.asarray(logits[2:])
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(aux["aux_loss"]))
    assert (float(aux["aux_loss"]) > 0) == (name == "learned_router")  # the load-balancing loss
    np.testing.assert_array_equal(a[:, : t + 1], b[:, : t + 1])
    assert not np.allclose(a[:, t + 1 :], b[:, t + 1 :]), "the test could not fail"


def test_scattering_router_uses_every_expert_on_real_text(tiny_config):
    """Real Japanese text (UTF-8 bytes of the demo corpus, vocab 256, no tokenizer needed): at
    init, every expert of every layer receives tokens."""
    with open(DEMO_SOURCES[1], "rb") as f:
        text = np.frombuffer(f.read(4 * 40), np.uint8).reshape(4, 40).astype(np.int32)
    cfg = component_config(tiny_config, "scattering_router")
    model = LanguageModel(cfg, 256, rngs=nnx.Rngs(0))
    assert set(nnx.to_pure_dict(nnx.state(model))["blocks"]["ffn"]) == {"experts"}  # no router parameters
    _, aux = nnx.jit(lambda m, x: m.forward_with_aux(x))(model, jnp.asarray(text))
    load = np.asarray(aux["expert_load"])  # [layers, experts]
    assert load.shape == (cfg.n_layers, cfg.n_experts)
    assert np.all(load > 0), f"a dead expert: {load}"
    np.testing.assert_allclose(load.sum(-1), 1.0, rtol=1e-6)


def test_parameter_counts_are_honest(tiny_config):
    from muse_jax.model.param_count import parameter_counts

    plain = parameter_counts(tiny_config.model, VOCAB)
    assert plain["stored"] == plain["dense_equivalent"] == count_params(nnx.state(tiny_model(tiny_config, "bk")))
    assert plain["ternary"] == 0
    all_on = component_config(tiny_config, "all")
    compressed = parameter_counts(all_on, VOCAB)
    assert compressed["stored"] < compressed["dense_equivalent"]
    assert 0 < compressed["ternary"] < compressed["stored"]
    all_on.low_rank, all_on.embedding = 0, "hyperbolic"  # the same model, uncompressed
    assert compressed["dense_equivalent"] == parameter_counts(all_on, VOCAB)["stored"]
