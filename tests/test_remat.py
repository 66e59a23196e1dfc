"""Remat policies: identical loss and gradients; offload compiles and runs on CPU."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from muse_jax.model.lm import LanguageModel
from muse_jax.model.remat import REMAT_POLICIES
from muse_jax.settings import ModelSettings

VOCAB = 97


def loss_and_grads(tiny_config, policy):
    model = LanguageModel(ModelSettings.from_config(tiny_config.model), VOCAB, rngs=nnx.Rngs(0), remat_policy=policy)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    tokens = jax.random.randint(jax.random.key(0), (2, 24), 0, VOCAB)

    @jax.jit
    def loss(params):
        logits = nnx.merge(graphdef, params)(tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    return jax.value_and_grad(loss)(params)


def test_every_policy_gives_the_same_loss_and_gradients(tiny_config):
    tiny_config.model.bk.semiseparable = True
    ref_loss, ref_grads = loss_and_grads(tiny_config, "none")
    for policy in REMAT_POLICIES[1:]:  # offload included: it must compile and run on CPU
        loss, grads = loss_and_grads(tiny_config, policy)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
            np.testing.assert_allclose(g, r, rtol=2e-5, atol=1e-7)


def test_unknown_policy_is_an_error(tiny_config):
    with pytest.raises(ValueError, match="unknown remat policy"):
        LanguageModel(ModelSettings.from_config(tiny_config.model), VOCAB, rngs=nnx.Rngs(0), remat_policy="sometimes")
