"""Mixed precision: parameters stored in `train.param_dtype`, the forward and backward passes run
in `train.compute_dtype` (e.g. float32 master weights, bfloat16 compute).

Cast are the layer weights — leaves named `kernel`, `embedding`, `scale`, `bias` and the
tensor-train cores (`TT_CORE_NAMES`) — once when the state is created (to param_dtype) and inside the loss
function before `nnx.merge` (to compute_dtype; the cast's transpose returns float32 gradients
to float32 weights). The activations follow the weights: every block linear multiplies in its
input's dtype. Kept in float32 whatever the settings: the BK spectral parameter z (`energy`,
`width`) and the hyperbolic head's scalars (`curvature_raw`, `temperature_raw`); the resolvent
itself runs in float32 / complex64 (`bk_mixer.py` casts the potential and coupling to float32),
and logits and loss are float32 (`lm.py`, `step.py`).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from muse_jax.config_error import ConfigError
from muse_jax.model.embedding import TT_CORE_NAMES

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
CAST_NAMES = ("kernel", "embedding", "scale", "bias")


def is_cast(path) -> bool:
    name = str(getattr(path[-1], "key", ""))
    return name in CAST_NAMES or name in TT_CORE_NAMES


def cast_weights(params, dtype):
    """`params` with the layer weights (see the module docstring) in `dtype`, the rest unchanged."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x.astype(dtype) if is_cast(path) and jnp.issubdtype(x.dtype, jnp.floating) else x,
        params,
    )


class Precision(NamedTuple):
    param_dtype: jnp.dtype
    compute_dtype: jnp.dtype

    @classmethod
    def from_config(cls, train_cfg: ml_collections.ConfigDict) -> "Precision":
        """Reads `train.param_dtype` and `train.compute_dtype`."""
        names = (train_cfg.param_dtype, train_cfg.compute_dtype)
        for key, name in zip(("param_dtype", "compute_dtype"), names):
            if name not in DTYPES:
                raise ConfigError(f"train.{key} must be one of {tuple(DTYPES)}, got {name!r}")
        return cls(*(jnp.dtype(DTYPES[n]) for n in names))
