"""BK-HyperSGD: momentum SGD whose rule depends on the geometry of each parameter group.

Groups are chosen by parameter path (regular expressions over "a/b/c" paths) and composed with
`optax.partition`:
  poincare    points on the Poincaré ball (one point per row): Riemannian SGD + projection
  orthogonal  square orthogonal matrices [..., n, n]: Cayley retraction, stays orthogonal
  euclidean   everything else: momentum SGD with decoupled weight decay
Retractions give a new point x'; the update returned is x' − x, which `optax.apply_updates`
turns back into x' to within one rounding.
"""

import re

import jax
import jax.numpy as jnp
import optax


GROUPS = ("euclidean", "poincare", "orthogonal")


def path_name(path) -> str:
    """Key path → "blocks/mixer/out/kernel"."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def label_params(params, poincare_params: str, orthogonal_params: str):
    """Group label per leaf; a pattern "" selects nothing. A leaf matching both is an error."""

    def label(path, leaf):
        name = path_name(path)
        in_ball = bool(poincare_params) and re.search(poincare_params, name) is not None
        orthogonal = bool(orthogonal_params) and re.search(orthogonal_params, name) is not None
        if in_ball and orthogonal:
            raise ValueError(f"parameter {name!r} matches both the poincare and the orthogonal pattern")
        if orthogonal and (leaf.ndim < 2 or leaf.shape[-1] != leaf.shape[-2]):
            raise ValueError(f"parameter {name!r} matched by the orthogonal pattern must be square [..., n, n], got {leaf.shape}")
        return "poincare" if in_ball else "orthogonal" if orthogonal else "euclidean"

    return jax.tree_util.tree_map_with_path(label, params)


def project_into_ball(x: jax.Array, boundary_eps: float) -> jax.Array:
    """Rows with ‖x‖ > 1 − ε are scaled back to norm 1 − ε; others are unchanged. In float32
    ε = 4e-3 (as geoopt): closer to the boundary 1 − ‖x‖² loses its digits."""
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x * jnp.minimum(1.0, (1.0 - boundary_eps) / jnp.maximum(norm, 1e-15))


def poincare_riemannian_gradient() -> optax.GradientTransformation:
    """g_R = g / λ_x², λ_x = 2 / (1 − ‖x‖²) the conformal factor of the unit Poincaré ball
    (curvature −1), so g_R = ((1 − ‖x‖²)² / 4) · g, row by row (Nickel & Kiela 2017)."""

    def update(grads, state, params):
        def scale(g, x):
            sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
            return (jnp.square(1.0 - sq) / 4.0 * g).astype(g.dtype)

        return jax.tree.map(scale, grads, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def poincare_retraction(learning_rate, boundary_eps: float) -> optax.GradientTransformation:
    """x' = proj(x − η m): the first-order retraction, then back strictly inside the ball.
    (The momentum m lives in different tangent spaces over time; like most Riemannian SGD
    implementations we skip the parallel transport, which only matters at second order in η.)"""

    def update(momentum, state, params):
        def step(m, x):
            return project_into_ball(x - learning_rate * m, boundary_eps) - x

        return jax.tree.map(step, momentum, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def cayley_retraction(learning_rate) -> optax.GradientTransformation:
    """For orthogonal W and (momentum) gradient M:  A = M Wᵀ − W Mᵀ (skew-symmetric), and

        W' = (I + η/2 · A)⁻¹ (I − η/2 · A) W.

    The Cayley transform of a skew matrix is orthogonal, so W' is orthogonal whenever W is;
    to first order W' = W − η (M − W Mᵀ W), the gradient projected on the tangent space of O(n)
    (Wen & Yin 2013, Li et al. 2020)."""

    def update(momentum, state, params):
        def step(m, w):
            a = m @ jnp.swapaxes(w, -1, -2) - w @ jnp.swapaxes(m, -1, -2)
            eye = jnp.eye(w.shape[-1], dtype=w.dtype)
            half = 0.5 * learning_rate * a
            return jnp.linalg.solve(eye + half, (eye - half) @ w) - w

        return jax.tree.map(step, momentum, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def bk_hyper_sgd(
    learning_rate,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    decay_mask=None,
    poincare_params: str = "",
    poincare_lr_mult: float = 1.0,
    orthogonal_params: str = "",
    orthogonal_lr_mult: float = 1.0,
    boundary_eps: float = 4e-3,
) -> optax.GradientTransformationExtraArgs:
    """Heavy-ball momentum m ← μ m + g per group, then per group (η = learning_rate × group mult):

      euclidean   x' = x − η (m + λ x)              (λ = weight_decay on `decay_mask` leaves,
                                                     decoupled: λx never enters m)
      poincare    m accumulates g_R (see `poincare_riemannian_gradient`),
                  x' = proj(x − η m)                (no weight decay: it would pull to the origin)
      orthogonal  x' = Cayley(x, η, m)              (no weight decay: it would break WᵀW = I)
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    euclidean = optax.chain(
        optax.trace(momentum),
        optax.add_decayed_weights(weight_decay, decay_mask),
        optax.scale(-learning_rate),
    )
    ball = optax.chain(
        poincare_riemannian_gradient(),
        optax.trace(momentum),
        poincare_retraction(learning_rate * poincare_lr_mult, boundary_eps),
    )
    orthogonal = optax.chain(optax.trace(momentum), cayley_retraction(learning_rate * orthogonal_lr_mult))
    return optax.partition(
        {"euclidean": euclidean, "poincare": ball, "orthogonal": orthogonal},
        lambda params: label_params(params, poincare_params, orthogonal_params),
    )
