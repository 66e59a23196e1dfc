"""The language models: shapes, finiteness, causality (transformer; BK under every scan impl, chunked over
several chunks; every component) and parameter counts against closed forms."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from muse_jax.data.demo import DEMO_SOURCES
from muse_jax.model import bk_scan
from muse_jax.model.lm import LanguageModel, count_params
from muse_jax.model.param_count import parameter_counts
from muse_jax.settings import BKSettings, ModelSettings

VOCAB = 97


def tiny_model(tiny_config, kind: str) -> LanguageModel:
    tiny_config.model.kind = kind
    return LanguageModel(ModelSettings.from_config(tiny_config.model), VOCAB, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("kind", ["bk", "transformer"])
def test_logits_shape_and_finite(tiny_config, kind):
    model = tiny_model(tiny_config, kind)
    tokens = jax.random.randint(jax.random.key(0), (2, 24), 0, VOCAB)
    logits = model(tokens)
    assert logits.shape == (2, 24, VOCAB) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


def assert_causal(logits_a, logits_b, t: int) -> None:
    """Positions ≤ t equal bit for bit; some position after t differs (else the test could not fail)."""
    a, b = np.asarray(logits_a), np.asarray(logits_b)
    np.testing.assert_array_equal(a[:, : t + 1], b[:, : t + 1])
    assert not np.allclose(a[:, t + 1 :], b[:, t + 1 :]), "the test could not fail"


def changed_after(tokens: jax.Array, t: int) -> jax.Array:
    """`tokens` with every position after t redrawn."""
    rows, n = tokens.shape
    return tokens.at[:, t + 1 :].set(jax.random.randint(jax.random.key(2), (rows, n - t - 1), 0, VOCAB))


@pytest.mark.parametrize("attention_impl", ["auto", "xla"])  # auto: what a CPU run takes (tests/test_attention.py)
def test_transformer_causality(tiny_config, attention_impl):
    """Changing tokens after position t never changes the logits at positions ≤ t, through
    `jax.nn.dot_product_attention` as the model calls it."""
    tiny_config.model.attention_impl = attention_impl
    model = tiny_model(tiny_config, "transformer")
    n, t = 40, 17
    tokens = jax.random.randint(jax.random.key(1), (2, n), 0, VOCAB)
    assert_causal(model(tokens), model(changed_after(tokens, t)), t)


# BK causality at a length where `chunked` really splits the sequence. The model passes the
# resolvent [B, C, N], so B·C rows of N positions: 8 rows (2 sequences, then 3 × 2 copies changed
# after t) × 8 channels at N = 384 give chunk_count = min(⌈8192/64⌉, 384 // 128) = 3 chunks of
# 128, and there is one t in each chunk (a leak from a later position of the same chunk, or from
# a later chunk, moves some position ≤ t). `associative` does not chunk and compiles slowly in N
# (O(log N) levels): a shorter sequence. `pallas` (interpreted on CPU) runs 2 chunks of its default
# 256 positions at N = 384, the second one partial, with t's in both.
BK_CAUSAL = {"sequential": (384, (100, 200, 300)), "chunked": (384, (100, 200, 300)),
             "associative": (40, (17, 30)), "pallas": (384, (100, 300))}  # impl: (N, the t's)
CHUNKED_CHUNKS = 3


@pytest.mark.parametrize("impl, semiseparable", [
    ("sequential", False), ("chunked", False), ("associative", False), ("pallas", False), ("chunked", True),
    ("associative", True), ("pallas", True),
])
def test_bk_causality_every_scan_impl(tiny_config, impl, semiseparable):
    """The full BK model under each `model.bk.scan_impl` (and with the semiseparable mix): logits
    at positions ≤ t ignore tokens after t, with `chunked` running 3 chunks (asserted in the
    traced computation: arrays laid out [P, K=3, L=128, C]) and a t in each of them, and
    `pallas` running its kernels (asserted: pallas_call in the traced computation)."""
    tiny_config.model.bk.scan_impl = impl
    tiny_config.model.bk.semiseparable = semiseparable
    model = tiny_model(tiny_config, "bk")
    (n, ts), channels = BK_CAUSAL[impl], tiny_config.model.bk.channels
    tokens = jax.random.randint(jax.random.key(1), (2, n), 0, VOCAB)
    rows = jnp.concatenate([tokens, *(changed_after(tokens, t) for t in ts)])  # batch rows are independent
    forward = jax.jit(lambda x: model(x))
    if impl == "chunked":
        assert bk_scan.chunk_count(rows.shape[0] * channels, n) == CHUNKED_CHUNKS
        chunk = n // CHUNKED_CHUNKS
        assert sorted(t // chunk for t in ts) == list(range(CHUNKED_CHUNKS))  # a t in every chunk
        traced = str(forward.trace(rows).jaxpr)
        assert f"f32[{rows.shape[0]},{CHUNKED_CHUNKS},{chunk},{channels}]" in traced, "not chunked as expected"
    if impl == "pallas":
        assert "pallas_call" in str(forward.trace(rows).jaxpr), "the Pallas kernels are not used"
    logits = forward(rows)
    for i, t in enumerate(ts, start=1):
        assert_causal(logits[:2], logits[2 * i : 2 * i + 2], t)


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
        model = LanguageModel(ModelSettings.from_config(component_config(tiny_config, name)), VOCAB,
                              rngs=nnx.Rngs(0))
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
    model = LanguageModel(ModelSettings.from_config(cfg), 256, rngs=nnx.Rngs(0))
    assert set(nnx.to_pure_dict(nnx.state(model))["blocks"]["ffn"]) == {"experts"}  # no router parameters
    _, aux = nnx.jit(lambda m, x: m.forward_with_aux(x))(model, jnp.asarray(text))
    load = np.asarray(aux["expert_load"])  # [layers, experts]
    assert load.shape == (cfg.n_layers, cfg.n_experts)
    assert np.all(load > 0), f"a dead expert: {load}"
    np.testing.assert_allclose(load.sum(-1), 1.0, rtol=1e-6)


# ---------------------------------------------------------------------------
# Parameter counts against closed forms derived from the constructors (linear.py, bk_mixer.py,
# ffn.py, moe.py, attention.py, embedding.py, lm.py), not from the model's own tree.
# ---------------------------------------------------------------------------
TT_WIDTH_FACTORS = {32: (4, 4, 2)}  # D = d1·d2·d3 as balanced as possible (tensor_train.balanced_factors)


def linear_count(d_in: int, d_out: int, rank: int, bias: bool = False) -> tuple[int, int, int]:
    """(stored, dense-equivalent, kernel entries) of one block linear: factors d_in×r and r×d_out
    where r(d_in + d_out) < d_in·d_out, else one d_in×d_out kernel; plus d_out for a bias."""
    b = d_out if bias else 0
    if 0 < rank and rank * (d_in + d_out) < d_in * d_out:
        kernels = rank * (d_in + d_out)
    else:
        kernels = d_in * d_out
    return kernels + b, d_in * d_out + b, kernels


def expected_counts(m, vocab: int) -> dict[str, int]:
    """Closed-form {"stored", "dense_equivalent", "ternary"} for the model config `m`.

    Per layer: two RMSNorm scales (D each); the mixer — BK: potential and coupling D→C with
    bias, (semiseparable: values D→C), read-out 2C→D (4C→D semiseparable), gate D→D, energies
    and widths C each; attention: qkv D→3D, out D→D —; the FFN: gate, up D→F and down F→D
    (F = ffn_mult·D), E times with experts, plus a D→E router kernel (learned router, dense,
    never ternary). Once: the table V×D (or TT cores v·d1·R + v·R·d2·R + v·R·d3, v = ⌈V^{1/3}⌉),
    two scalars for the hyperbolic head, the final norm (D)."""
    d, c, r, f = m.d_model, m.bk.channels, m.low_rank, m.ffn_mult * m.d_model
    linears = []  # (d_in, d_out, bias)
    if m.kind == "bk":
        features = (4 if m.bk.semiseparable else 2) * c
        linears += [(d, c, True), (d, c, True), (features, d, False), (d, d, False)]
        linears += [(d, c, False)] if m.bk.semiseparable else []
        spectral = 2 * c
    else:
        linears += [(d, 3 * d, False), (d, d, False)]
        spectral = 0
    experts = m.n_experts if m.router != "none" else 1
    linears += experts * [(d, f, False), (d, f, False), (f, d, False)]
    per_layer = [linear_count(i, o, r, bias) for i, o, bias in linears]
    router = d * m.n_experts if m.router == "learned" else 0
    layer_stored = 2 * d + spectral + router + sum(x[0] for x in per_layer)
    layer_dense = 2 * d + spectral + router + sum(x[1] for x in per_layer)
    if m.embedding.endswith("htt"):
        v = next(v for v in range(1, vocab + 1) if v**3 >= vocab)
        (d1, d2, d3), rank = TT_WIDTH_FACTORS[d], m.htt_rank
        table = v * d1 * rank + v * rank * d2 * rank + v * rank * d3
    else:
        table = vocab * d
    head = 2 if m.embedding.startswith("hyperbolic") else 0  # curvature and temperature
    once_stored, once_dense = table + head + d, vocab * d + head + d
    return {"stored": once_stored + m.n_layers * layer_stored,
            "dense_equivalent": once_dense + m.n_layers * layer_dense,
            "ternary": m.n_layers * sum(x[2] for x in per_layer) if m.ternary else 0}


def test_closed_form_counts_by_hand():
    """The closed form itself, at the tiny width (D 32, C 8, F 96, 2 layers, V 97), against
    numbers worked out by hand, so that it cannot drift with the model."""
    m = ModelSettings(d_model=32, n_layers=2, n_heads=2, bk=BKSettings(channels=8))
    # bk: 97·32 + 32 + 2·(64 + 2·(256 + 8) + 16 + 16·32 + 32·32 + 3·32·96) = 3136 + 2·11360
    assert expected_counts(m, VOCAB)["stored"] == 25_856
    # transformer: 3136 + 2·(64 + 32·96 + 32·32 + 3·32·96)
    assert expected_counts(dataclasses.replace(m, kind="transformer"), VOCAB)["stored"] == 29_888


PARAM_COUNT_CASES = {
    "bk": {},
    "transformer": {"kind": "transformer"},
    "bk_low_rank": {"low_rank": 4},
    "transformer_low_rank": {"kind": "transformer", "low_rank": 4},
    "semiseparable": {"bk.semiseparable": True},
    "learned_router": {"router": "learned", "router_top_k": 2},
    "htt": {"embedding": "htt"},
    "all": ALL_ON,
}


@pytest.mark.parametrize("name", list(PARAM_COUNT_CASES))
def test_parameter_counts_match_the_closed_form(tiny_config, name):
    """`parameter_counts` (stored, dense-equivalent, ternary) equals the closed form."""
    m = ModelSettings.from_config(set_model_keys(tiny_config.model, PARAM_COUNT_CASES[name]))
    assert parameter_counts(m, VOCAB) == expected_counts(m, VOCAB)


@pytest.mark.parametrize("kind", ["bk", "transformer"])
def test_a_real_model_stores_the_closed_form_count(tiny_config, kind):
    """The allocated model (not an abstract one) holds exactly the closed-form number of parameters."""
    model = tiny_model(tiny_config, kind)
    expected = expected_counts(ModelSettings.from_config(tiny_config.model), VOCAB)["stored"]
    assert count_params(nnx.state(model, nnx.Param)) == expected


def test_parameter_counts_are_honest(tiny_config):
    plain = parameter_counts(ModelSettings.from_config(tiny_config.model), VOCAB)
    assert plain["stored"] == plain["dense_equivalent"]
    assert plain["ternary"] == 0
    all_on = component_config(tiny_config, "all")
    compressed = parameter_counts(ModelSettings.from_config(all_on), VOCAB)
    assert compressed["stored"] < compressed["dense_equivalent"]
    assert 0 < compressed["ternary"] < compressed["stored"]
    all_on.low_rank, all_on.embedding = 0, "hyperbolic"  # the same model, uncompressed
    assert compressed["dense_equivalent"] == parameter_counts(ModelSettings.from_config(all_on), VOCAB)["stored"]
