"""The mixture-of-experts FFN: E gated MLPs and a router (see `router.py` for the rules).

Compute is dense: every expert runs on every token and the outputs are combined with the
gates (zero for unrouted experts). At our widths this is simpler and as fast as gathering
tokens per expert; there is no capacity limit and no dropped token.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from muse_jax.model.ffn import GatedMLP
from muse_jax.model.linear import DenseLinear, LinearSpec
from muse_jax.model.router import expert_load, load_balancing_loss, scattering_route, top_k_route
from muse_jax.settings import ModelSettings


class MixtureOfExperts(nnx.Module):
    """y_n = Σ_e gate_{n,e} · MLP_e(x_n); `__call__(x, g)` returns (y, aux)."""

    def __init__(self, model: ModelSettings, linear: LinearSpec, *, rngs: nnx.Rngs):
        self.router = model.router
        self.n_experts = model.n_experts
        d = model.d_model

        @nnx.split_rngs(splits=self.n_experts)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_experts(rngs: nnx.Rngs) -> GatedMLP:
            return GatedMLP(d, model.ffn_width, linear, rngs=rngs)

        self.experts = make_experts(rngs)
        if self.router == "learned":
            self.top_k = model.router_top_k
            self.balance_weight = model.router_balance_weight
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
