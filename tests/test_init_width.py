"""The first loss is ln V at every width (issue 16): the tied head reads out with α/D (μP), so the
input token's own embedding row, which fills the residual stream at init, no longer gives that
token a logit ≈ 0.75·√D (24 at D = 1024: a first loss of 23 nats with the old 1/√D head)."""

import math

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from configs.tiny_ja import get_config
from muse_jax.model.lm import LanguageModel
from muse_jax.model.param_roles import roles
from muse_jax.settings import ModelSettings
from muse_jax.train.precision import cast_weights

VOCAB = 4096  # the demo's; a small vocabulary is the strict case (the self-logit competes with V others)
WIDTHS = (64, 256, 1024, 4096)
# Every embedding with every model kind; compression and precision rotate over them, so at every
# width each embedding, kind, linear (dense / low-rank / ternary / both) and dtype is present.
VARIANTS = [
    ("bk", "euclidean", 0, False, "float32"),
    ("bk", "hyperbolic", 16, True, "bfloat16"),
    ("bk", "htt", 0, True, "float32"),
    ("bk", "hyperbolic_htt", 16, False, "bfloat16"),
    ("transformer", "euclidean", 16, True, "bfloat16"),
    ("transformer", "hyperbolic", 0, False, "float32"),
    ("transformer", "htt", 16, False, "float32"),
    ("transformer", "hyperbolic_htt", 0, True, "bfloat16"),
]


def first_loss(d_model: int, kind: str, embedding: str, low_rank: int, ternary: bool, dtype: str) -> float:
    c = get_config().model
    c.kind, c.embedding, c.low_rank, c.ternary = kind, embedding, low_rank, ternary
    c.d_model, c.n_layers, c.n_heads, c.ffn_mult = d_model, 2, d_model // 64, 1
    model = LanguageModel(ModelSettings.from_config(c), VOCAB, rngs=nnx.Rngs(0))
    cast = roles(model).cast
    graphdef, params = nnx.split(model)
    tokens = jax.random.randint(jax.random.key(1), (2, 17), 0, VOCAB)

    @jax.jit
    def loss(params):
        logits = nnx.merge(graphdef, cast_weights(nnx.to_pure_dict(params), jnp.dtype(dtype), cast))(tokens[:, :-1])
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))

    return float(loss(params))


@pytest.mark.slow
@pytest.mark.parametrize("d_model", WIDTHS)
def test_first_loss_is_ln_vocab_at_every_width(d_model):
    losses = {variant: first_loss(d_model, *variant) for variant in VARIANTS}
    far = {v: round(loss, 3) for v, loss in losses.items() if abs(loss - math.log(VOCAB)) > 0.5}
    assert not far, f"first loss not within 0.5 of ln V = {math.log(VOCAB):.3f} at d_model {d_model}: {far}"
