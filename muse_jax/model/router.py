r"""Token → expert routing rules (pure functions). `model.router` = none | scattering | learned.

Scattering (zero learned parameters). Per token n, the BK mixer of the same block produced
C resolvent diagonals g_{c,n} = θ_{c,n-1}/θ_{c,n} (θ = det(H_{1:n} - z)); each lies in the upper
half plane when Im z_c > 0, so arg g_{c,n} ∈ (0, π). Their sum

    δ_n = Σ_c arg g_{c,n} = -Δ_n arg det(H_{1:n} - z) over the channel direct sum

is the phase shift that appending token n adds to the determinant (the Birman–Krein phase).
The route is δ_n reduced mod π, binned into E equal-width bins of [0, π):

    expert(n) = floor(E · (δ_n mod π) / π).

Why not bin arg of the mean g: averaging C channels concentrates that phase near π/2 —
measured on the demo corpus with the tiny_ja BK model (E = 4, C = 64), the two outer bins
received 0% of tokens at init and after its 600-step run. δ_n mod π is spread near uniformly (each bin 23–27%, same runs),
and every bin is reachable: a single channel's phase alone covers (0, π) as a_{c,n} varies.
Gate weight 1 for the chosen expert.

Learned: router logits W x, softmax p, the top-k experts with their probabilities renormalised
over the top k as gates; Switch-Transformer load-balancing loss

    L_bal = E · Σ_e f_e P_e,   f_e = fraction of token-slots sent to e,  P_e = mean_n p_{n,e},

which is 1 when balanced. Both rules look at token n alone, so routing is causal.
"""

import jax
import jax.numpy as jnp



def scattering_phase(g: jax.Array) -> jax.Array:
    """δ_n mod π ∈ [0, π) from g [..., C] (complex) → [...]. No gradient (routing is discrete)."""
    total = jnp.sum(jnp.angle(jax.lax.stop_gradient(g)), axis=-1)
    return jnp.mod(total, jnp.pi)


def scattering_route(g: jax.Array, n_experts: int) -> jax.Array:
    """One-hot gates [..., E]: expert floor(E·(δ mod π)/π)."""
    expert = jnp.floor(scattering_phase(g) * (n_experts / jnp.pi)).astype(jnp.int32)
    return jax.nn.one_hot(jnp.clip(expert, 0, n_experts - 1), n_experts, dtype=jnp.float32)


def top_k_route(logits: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """(gates [..., E] with the top-k softmax probabilities renormalised, others 0; probs [..., E])."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    top_values, top_index = jax.lax.top_k(probs, k)
    chosen = jnp.sum(jax.nn.one_hot(top_index, probs.shape[-1], dtype=probs.dtype), axis=-2)
    gates = chosen * probs / jnp.sum(top_values, axis=-1, keepdims=True)
    return gates, probs


def expert_load(gates: jax.Array) -> jax.Array:
    """Fraction of token-slots per expert, [E] (sums to 1)."""
    chosen = (gates > 0).astype(jnp.float32).reshape(-1, gates.shape[-1])
    return chosen.sum(0) / jnp.maximum(chosen.sum(), 1.0)


def load_balancing_loss(gates: jax.Array, probs: jax.Array) -> jax.Array:
    """E · Σ_e f_e P_e (Switch Transformer); gradient reaches the router through P_e."""
    n_experts = probs.shape[-1]
    mean_prob = probs.reshape(-1, n_experts).mean(0)
    return n_experts * jnp.sum(jax.lax.stop_gradient(expert_load(gates)) * mean_prob)


def routing_metrics(aux: dict) -> dict:
    """Scalars to log from `LanguageModel.forward_with_aux`'s aux (empty without experts):
    aux_loss, expert_load_e{e} (load of expert e averaged over layers) and expert_load_min
    (the least-loaded expert of any layer: 0 means a dead expert)."""
    load = aux["expert_load"]  # [n_layers, E]
    if load.shape[-1] == 0:
        return {}
    per_expert = {f"expert_load_e{e}": load[:, e].mean() for e in range(load.shape[-1])}
    return {"aux_loss": aux["aux_loss"], **per_expert, "expert_load_min": load.min()}
