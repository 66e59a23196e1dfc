r"""Low-rank linear maps: W = L R with L ∈ R^{d_in×r}, R ∈ R^{r×d_out}.

    y = (x L) R          cost and storage r (d_in + d_out) instead of d_in d_out.

Init: L ~ N(0, 1/d_in), R ~ N(0, 1/r), so Var(y_k) = Var(x) as for a dense LeCun-normal kernel.
A layer is factorised only where it saves parameters, r (d_in + d_out) < d_in d_out;
otherwise it stays dense (so `model.low_rank` never inflates a layer).
"""

import jax
import jax.numpy as jnp


def low_rank_matmul(x: jax.Array, left: jax.Array, right: jax.Array) -> jax.Array:
    """(x L) R, never forming L R."""
    return jnp.matmul(jnp.matmul(x, left), right)


def low_rank_saves_parameters(d_in: int, d_out: int, rank: int) -> bool:
    """r (d_in + d_out) < d_in d_out (and r > 0)."""
    return 0 < rank and rank * (d_in + d_out) < d_in * d_out
