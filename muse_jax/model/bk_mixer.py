"""The ResNet-BK mixing sublayer: token mixing through the causal resolvent of a learned Hamiltonian."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from muse_jax.model.bk_core import bk_step, causal_resolvent_diag
from muse_jax.model.linear import LinearSpec
from muse_jax.model.param_roles import float32_param
from muse_jax.model.prime_bump import prime_bump_energies
from muse_jax.model.semiseparable import causal_resolvent_apply, causal_resolvent_apply_step
from muse_jax.settings import BKSettings

ENERGY_MAX = 1.5  # plain init: E_c = linspace(-ENERGY_MAX, ENERGY_MAX)
INITIAL_WIDTH = 0.5  # initial Im z_c - lap_eta (LAP on) or Im z_c (LAP off)
INITIAL_COUPLING = 0.5  # softplus of the coupling bias: kappa ≈ 0.5 at init


def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y, for y > 0."""
    return float(np.log(np.expm1(y)))


class BKMixer(nnx.Module):
    """Per-layer Hamiltonian from the token stream, features from its causal resolvent.

    For hidden states h_n ∈ R^D (n = 1..N) and C channels c:
        a_{c,n} = (W_a h_n)_c + β_c                  potential (diagonal of H_c)
        κ_{c,n} = softplus((W_κ h_n)_c + β'_c) ≥ 0   coupling between n−1 and n
        z_c     = E_c + i (η + softplus(ρ_c))        LAP on (η = bk.lap_eta > 0): Im z_c ≥ η
        z_c     = E_c + i ρ_c                        LAP off (bk.lap_eta ≤ 0): Im z_c unconstrained
        g_{c,n} = [(H_{c,1:n} − z_c)⁻¹]_{nn}          causal resolvent diagonal, |g| ≤ 1/Im z_c
        s_{c,n} = Σ_{j≤n} [(H_{c,1:n} − z_c)⁻¹]_{nj} (W_v h_j)_c     (bk.semiseparable only)
        y_n     = W_o [Im z_c·g_{c,n}, Im z_c·s_{c,n}]_c (real and imaginary parts) ⊙ silu(W_gate h_n)
    The factor Im z_c scales g into the unit disc (|Im z · g| ≤ 1) without clipping. E_c is
    initialised by linspace or by Prime-Bump (`prime_bump.py`).

    `__call__` returns (y, g): g [B, N, C] feeds the scattering router of the same block.

    Generation (`prefill`, `step`): the mixer is a recurrence, so its whole past is the state
    {"g": g_{c,n}, "s": s_{c,n}} ([B, C] complex each; "s" with bk.semiseparable only), a fixed
    size whatever n is. `prefill` runs the parallel form over the prompt and returns the state at
    its last position; `step` advances one token by g_n = 1/(a_n − z − κ_n g_{n−1}) and
    s_n = g_n (v_n − √κ_n s_{n−1}), in O(C) work per token.
    """

    def __init__(self, d_model: int, bk: BKSettings, linear: LinearSpec, *, rngs: nnx.Rngs):
        channels = bk.channels
        self.lap_eta = bk.lap_eta
        self.scan_impl = bk.scan_impl
        self.semiseparable = bk.semiseparable
        self.potential = linear.make(d_model, channels, use_bias=True, rngs=rngs)
        self.coupling = linear.make(d_model, channels, use_bias=True, bias_value=inverse_softplus(INITIAL_COUPLING),
                                    rngs=rngs)
        if bk.prime_bump:
            energies = prime_bump_energies(channels, ENERGY_MAX)
        else:
            energies = np.linspace(-ENERGY_MAX, ENERGY_MAX, channels, dtype=np.float32)
        self.energy = float32_param(jnp.asarray(energies, jnp.float32))
        width = inverse_softplus(INITIAL_WIDTH) if self.lap else INITIAL_WIDTH
        self.width = float32_param(jnp.full((channels,), width, jnp.float32))
        if self.semiseparable:
            self.values = linear.make(d_model, channels, rngs=rngs)
        n_features = (4 if self.semiseparable else 2) * channels
        self.out = linear.make(n_features, d_model, width_fan_in=False, rngs=rngs)  # fan-in 2C or 4C: fixed
        self.gate = linear.make(d_model, d_model, rngs=rngs)

    @property
    def lap(self) -> bool:
        return self.lap_eta > 0

    def spectral_parameter(self) -> jax.Array:
        """z_c, shape [C]: E_c + i(η + softplus(ρ_c)) with LAP, E_c + iρ_c without."""
        width = self.width[...]
        im = self.lap_eta + jax.nn.softplus(width) if self.lap else width
        return jax.lax.complex(self.energy[...], im)

    def resolvent(self, h: jax.Array, start: jax.Array | None = None
                  ) -> tuple[jax.Array, jax.Array | None, jax.Array]:
        """(g [B, N, C], semiseparable mix s [B, N, C] or None, z [C]); complex64.

        `start` [B] (int, optional): row b's sequence begins at position start[b] (left padding).
        κ is set to 0 at every position n ≤ start[b], which cuts the chain there: g and s at
        start[b] are 1/(a − z) and g·v exactly as for an unpadded sequence, and the padding
        before it (whose features are never used) cannot reach any later position."""
        a = jnp.swapaxes(self.potential(h).astype(jnp.float32), -1, -2)  # [B, C, N]
        kappa = jnp.swapaxes(jax.nn.softplus(self.coupling(h)).astype(jnp.float32), -1, -2)
        if start is not None:
            kappa = jnp.where(jnp.arange(kappa.shape[-1]) <= start[:, None, None], 0.0, kappa)
        z = self.spectral_parameter()
        g = causal_resolvent_diag(a, kappa, z[:, None], impl=self.scan_impl)
        mixed = None
        if self.semiseparable:
            v = jnp.swapaxes(self.values(h).astype(jnp.float32), -1, -2)
            mixed = jnp.swapaxes(causal_resolvent_apply(g, kappa, v, impl=self.scan_impl), -1, -2)
        return jnp.swapaxes(g, -1, -2), mixed, z

    def output(self, h: jax.Array, g: jax.Array, mixed: jax.Array | None, z: jax.Array) -> jax.Array:
        """y = W_o [Im z·g (, Im z·s)]_{Re, Im} ⊙ silu(W_gate h); h [B, N, D], g and s [B, N, C]."""
        parts = [g] if mixed is None else [g, mixed]
        scaled = [p * z.imag for p in parts]
        features = jnp.concatenate([q for p in scaled for q in (p.real, p.imag)], axis=-1).astype(h.dtype)
        return self.out(features) * jax.nn.silu(self.gate(h))

    def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        g, mixed, z = self.resolvent(h)
        return self.output(h, g, mixed, z), g

    def prefill(self, h: jax.Array, start: jax.Array, max_len: int) -> tuple[jax.Array, jax.Array, dict]:
        """(y [B, N, D], g [B, N, C], state at position N−1) over a left-padded prompt (see
        `resolvent` for `start`). `max_len` is unused: the state does not grow."""
        del max_len
        g, mixed, z = self.resolvent(h, start)
        state = {"g": g[:, -1]} if mixed is None else {"g": g[:, -1], "s": mixed[:, -1]}
        return self.output(h, g, mixed, z), g, state

    def step(self, h: jax.Array, state: dict, index: jax.Array, start: jax.Array
             ) -> tuple[jax.Array, jax.Array, dict]:
        """One token, h [B, 1, D] → (y [B, 1, D], g [B, 1, C], new state); `index`, `start` unused:
            g_n = 1/(a_n − z − κ_n g_{n−1}),   s_n = g_n (v_n − √κ_n s_{n−1})."""
        del index, start
        a = self.potential(h)[:, 0].astype(jnp.float32)  # [B, C]
        kappa = jax.nn.softplus(self.coupling(h))[:, 0].astype(jnp.float32)
        z = self.spectral_parameter()
        _, g = bk_step(state["g"], a, kappa, z)
        new_state, mixed = {"g": g}, None
        if self.semiseparable:
            v = self.values(h)[:, 0].astype(jnp.float32)
            new_state["s"] = causal_resolvent_apply_step(state["s"], g, kappa, v)
            mixed = new_state["s"][:, None]
        return self.output(h, g[:, None], mixed, z), g[:, None], new_state

    def write_cache(self, layers: dict, update: dict, index: jax.Array) -> dict:
        """The new state replaces the old one (every layer's, stacked)."""
        del layers, index
        return update
