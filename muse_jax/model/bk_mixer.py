"""The ResNet-BK mixing sublayer: token mixing through the causal resolvent diagonal."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from muse_jax.model.bk_core import causal_resolvent_diag


def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y, for y > 0."""
    return float(np.log(np.expm1(y)))


class BKMixer(nnx.Module):
    """Per-layer Hamiltonian from the token stream, features from its causal resolvent.

    For hidden states h_n ∈ R^D (n = 1..N) and C channels c:
        a_{c,n} = (W_a h_n)_c                      potential (diagonal of H_c)
        κ_{c,n} = softplus((W_κ h_n)_c)  ≥ 0         coupling between n−1 and n
        z_c     = E_c + i (η + softplus(ρ_c))        per-channel energy, Im z_c ≥ η (LAP)
        g_{c,n} = [(H_{c,1:n} − z_c)⁻¹]_{nn}          causal resolvent diagonal, |g| ≤ 1/Im z_c
        y_n     = W_o [Im z_c · Re g_{c,n}, Im z_c · Im g_{c,n}]_c ⊙ silu(W_gate h_n)
    The factor Im z_c scales the features into the unit disc (|Im z · g| ≤ 1) without clipping.
    """

    def __init__(self, d_model: int, channels: int, lap_eta: float, scan_impl: str, *, rngs: nnx.Rngs):
        if lap_eta <= 0:
            raise ValueError(f"model.bk.lap_eta must be > 0, got {lap_eta}")
        self.lap_eta = lap_eta
        self.scan_impl = scan_impl
        self.potential = nnx.Linear(d_model, channels, rngs=rngs)
        self.coupling = nnx.Linear(
            d_model, channels, bias_init=nnx.initializers.constant(inverse_softplus(0.5)), rngs=rngs
        )
        self.energy = nnx.Param(jnp.linspace(-1.5, 1.5, channels, dtype=jnp.float32))
        self.width = nnx.Param(jnp.full((channels,), inverse_softplus(0.5), jnp.float32))
        self.out = nnx.Linear(2 * channels, d_model, use_bias=False, rngs=rngs)
        self.gate = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

    def spectral_parameter(self) -> jax.Array:
        """z_c = E_c + i(η + softplus(ρ_c)), shape [C]."""
        im = self.lap_eta + jax.nn.softplus(self.width[...])
        return jax.lax.complex(self.energy[...], im)

    def __call__(self, h: jax.Array) -> jax.Array:
        a = self.potential(h).astype(jnp.float32)  # [B, N, C]
        kappa = jax.nn.softplus(self.coupling(h)).astype(jnp.float32)
        z = self.spectral_parameter()
        g = causal_resolvent_diag(
            jnp.swapaxes(a, -1, -2), jnp.swapaxes(kappa, -1, -2), z[:, None], impl=self.scan_impl
        )  # [B, C, N]
        g = jnp.swapaxes(g, -1, -2) * z.imag  # [B, N, C], |.| ≤ 1
        features = jnp.concatenate([g.real, g.imag], axis=-1).astype(h.dtype)
        return self.out(features) * jax.nn.silu(self.gate(h))
