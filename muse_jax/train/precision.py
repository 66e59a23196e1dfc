"""Mixed precision: parameters stored in `train.param_dtype`, the forward and backward passes run
in `train.compute_dtype` (e.g. float32 master weights, bfloat16 compute).

Cast are the parameters whose role allows it (`model/param_roles.py`: every floating parameter
not marked `keep_float32`): once when the state is created (to param_dtype), and inside the loss
function, evaluation and sampling before `nnx.merge` (to compute_dtype; the cast's transpose
returns float32 gradients to float32 weights). The activations follow the weights: every block
linear multiplies in its input's dtype. Kept in float32 whatever the settings: the BK spectral
parameter z (energies, widths) and the hyperbolic head's scalars; the resolvent itself runs in
float32 / complex64 (`bk_mixer.py` casts the potential and coupling to float32), and logits and
loss are float32 (`lm.py`, `step.py`).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from muse_jax.settings import TrainSettings

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def cast_weights(params, dtype, cast_mask):
    """`params` with the leaves `cast_mask` marks (a tree of bools like params, `ParamRoles.cast`)
    in `dtype`, the rest unchanged."""
    return jax.tree.map(lambda x, cast: x.astype(dtype) if cast and jnp.issubdtype(x.dtype, jnp.floating) else x,
                        params, cast_mask)


class Precision(NamedTuple):
    param_dtype: jnp.dtype
    compute_dtype: jnp.dtype

    @classmethod
    def of(cls, train: TrainSettings) -> "Precision":
        return cls(jnp.dtype(DTYPES[train.param_dtype]), jnp.dtype(DTYPES[train.compute_dtype]))
