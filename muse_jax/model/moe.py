"""The mixture-of-experts FFN: E gated MLPs and a router (see `router.py` for the rules).

Compute is dense: every expert runs on every token and the outputs are combined with the
gates (zero for unrouted experts). At our widths this is simpler and as fast as gathering
tokens per expert; there is no capacity limit and no dropped token.
"""

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from muse_jax.config_error import ConfigError
from muse_jax.model.ffn import GatedMLP
from muse_jax.model.linear import DenseLinear, LinearSpec
from muse_jax.model.router import expert_load, load_balancing_loss, scattering_route, top_k_route


class MixtureOfExperts(nnx.Module):
    """y_n = Σ_e gate_{n,e} · MLP_e(x_n); `__call__(x, g)` returns (y, aux)."""

    def __init__(self, cfg: ml_collections.ConfigDict, linear: LinearSpec, *, rngs: nnx.Rngs):
        self.router = cfg.router
        self.n_experts = int(cfg.n_experts)
        if self.n_experts < 1:
            raise ConfigError(f"model.n_experts must be >= 1, got {self.n_experts}")
        d = cfg.d_model

        @nnx.split_rngs(splits=self.n_experts)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_experts(rngs: nnx.Rngs) -> GatedMLP:
            return GatedMLP(d, cfg.ffn_mult * d, linear, rngs=rngs)

        self.experts = make_experts(rngs)
        if self.router == "learned":
            self.top_k = int(cfg.router_top_k)
            if not 1 <= self.top_k <= self.n_experts:
                raise ConfigError(f"model.router_top_k must be in [1, n_experts={self.n_experts}], got {self.top_k}")
            self.balance_weight = float(cfg.router_balance_weight)
            self.gate_logits = DenseLinear(d, self.n_experts, rngs=rngs)

    def route(self, x: jax.Array, g: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """(gates [B, N, E], weighted auxiliary loss)."""
        if self.router == "scattering":
            return scattering_route(g, self.n_experts), jnp.zeros((), jnp.float32)
        gates, probs = top_k_route(self.gate_logits(x), self.top_k)
        return gates, self.balance_weight * load_balancing_loss(gates, probs)

    def __call__(self, x: jax.Array, g: jax.Array | None) -> tuple[jax.Array, dict]:
        gates, aux_loss = self.route(x, g)
        expert_def, expert_state = nnx.split(self.experts)
        outputs = jax.vmap(lambda state: nnx.merge(expert_def, state)(x))(expert_state)  # [E, B, N, D]
        y = jnp.einsum("ebnd,bne->bnd", outputs, gates.astype(outputs.dtype))
        return y, {"aux_loss": aux_loss, "expert_load": expert_load(gates)}
