"""BK-HyperSGD: each parameter group's rule on a toy problem, and the grouping by path."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from muse_jax.optim.bk_hyper_sgd import bk_hyper_sgd, label_params


def minimise(tx, params, grad_fn, steps: int, check=None):
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grad_fn(params), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
        if check is not None:
            check(params)
    return params


def test_groups_by_path():
    params = {"embed": {"ball": jnp.zeros((4, 3))}, "mix": {"rot": jnp.eye(3), "kernel": jnp.zeros((3, 2))}}
    labels = label_params(params, "embed/ball", r"rot$")
    assert labels == {"embed": {"ball": "poincare"}, "mix": {"rot": "orthogonal", "kernel": "euclidean"}}
    with pytest.raises(ValueError, match="both"):
        label_params(params, "mix", "rot")
    with pytest.raises(ValueError, match="square"):
        label_params(params, "", "kernel")


def test_euclidean_group_is_momentum_sgd_with_decoupled_weight_decay():
    lr, mu, wd = 0.1, 0.9, 0.5
    params = {"kernel": jnp.array([1.0, -2.0]), "bias": jnp.array([3.0])}
    grads = {"kernel": jnp.array([0.5, 0.5]), "bias": jnp.array([1.0])}
    mask = lambda p: {"kernel": True, "bias": False}  # noqa: E731
    out = minimise(bk_hyper_sgd(lr, mu, wd, mask), params, lambda p: grads, 2)
    k1 = params["kernel"] - lr * (grads["kernel"] + wd * params["kernel"])
    k2 = k1 - lr * ((1 + mu) * grads["kernel"] + wd * k1)  # λx is not in the momentum
    np.testing.assert_allclose(out["kernel"], k2, rtol=1e-6)
    np.testing.assert_allclose(out["bias"], params["bias"] - lr * (2 + mu) * grads["bias"], rtol=1e-6)


def test_poincare_group_takes_the_riemannian_step_and_stays_in_the_ball():
    x = jnp.array([[0.6, 0.0], [0.0, 0.3]])
    g = jnp.array([[1.0, 2.0], [-1.0, 0.5]])
    tx = bk_hyper_sgd(0.1, momentum=0.9, poincare_params="ball")
    one = minimise(tx, {"ball": x}, lambda p: {"ball": g}, 1)["ball"]
    conformal = (1 - jnp.sum(x * x, -1, keepdims=True)) ** 2 / 4
    np.testing.assert_allclose(one, x - 0.1 * conformal * g, rtol=1e-6)

    tx = bk_hyper_sgd(0.5, momentum=0.5, poincare_params="ball")
    inside, outside = jnp.array([[0.5, -0.4]]), jnp.array([[3.0, 4.0]])

    def in_ball(p):
        assert float(jnp.linalg.norm(p["ball"], axis=-1).max()) < 1.0

    pull = lambda target: lambda p: {"ball": p["ball"] - target}  # noqa: E731  ∇ ½‖x − t‖²
    start = {"ball": jnp.zeros((1, 2))}
    np.testing.assert_allclose(minimise(tx, start, pull(inside), 300, in_ball)["ball"], inside, atol=1e-4)
    edge = minimise(tx, start, pull(outside), 300, in_ball)["ball"]
    np.testing.assert_allclose(edge / jnp.linalg.norm(edge), outside / 5.0, atol=1e-3)  # towards t, inside


def test_orthogonal_group_stays_orthogonal_and_solves_procrustes():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(2, 4, 4)))
    q[:, :, 0] *= np.sign(np.linalg.det(q))[:, None]  # det +1: reachable from I
    target = jnp.asarray(q, jnp.float32)
    eye = jnp.eye(4)

    def orthogonal(p):
        w = p["rot"]
        np.testing.assert_allclose(w @ jnp.swapaxes(w, -1, -2), jnp.broadcast_to(eye, w.shape), atol=2e-5)

    tx = bk_hyper_sgd(0.1, momentum=0.5, orthogonal_params="rot", orthogonal_lr_mult=2.0)
    start = {"rot": jnp.broadcast_to(eye, (2, 4, 4))}
    out = minimise(tx, start, lambda p: {"rot": p["rot"] - target}, 300, orthogonal)  # ∇ ½‖W − Q‖²
    np.testing.assert_allclose(out["rot"], target, atol=1e-3)
