"""Mixed precision: parameters stored in `train.param_dtype`, the forward and backward passes run
in `train.compute_dtype` (e.g. float32 master weights, bfloat16 compute). `compute_dtype=auto`
(the default) is resolved here, once, by the backend (`resolve_compute_dtype`): bfloat16 where
the matrix units are built for it (GPU, TPU), float32 on CPU (no bfloat16 speed-up there, and
the CPU tests compare against float32 references).

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
BFLOAT16_BACKENDS = ("gpu", "tpu")  # compute_dtype=auto → bfloat16 on these, float32 elsewhere


def cast_weights(params, dtype, cast_mask):
    """`params` with the leaves `cast_mask` marks (a tree of bools like params, `ParamRoles.cast`)
    in `dtype`, the rest unchanged."""
    return jax.tree.map(lambda x, cast: x.astype(dtype) if cast and jnp.issubdtype(x.dtype, jnp.floating) else x,
                        params, cast_mask)


def resolve_compute_dtype(name: str, backend: str | None = None) -> jnp.dtype:
    """The dtype `train.compute_dtype = name` means on `backend` (default: `jax.default_backend()`):
    auto → bfloat16 on GPU/TPU, float32 otherwise; float32 / bfloat16 as named."""
    if name == "auto":
        backend = jax.default_backend() if backend is None else backend
        name = "bfloat16" if backend in BFLOAT16_BACKENDS else "float32"
    return jnp.dtype(DTYPES[name])


class Precision(NamedTuple):
    param_dtype: jnp.dtype
    compute_dtype: jnp.dtype

    @classmethod
    def of(cls, train: TrainSettings) -> "Precision":
        return cls(jnp.dtype(DTYPES[train.param_dtype]), resolve_compute_dtype(train.compute_dtype))
