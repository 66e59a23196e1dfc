"""What each parameter is, told by the model itself: NNX Variable metadata set where the
parameter is created, read (never guessed from names) by the optimizer, precision and sharding.

    decay         True: decoupled weight decay applies (weight matrices, the embedding table
                  or its TT cores); default False (norms, biases, BK spectral parameters)
    keep_float32  True: never cast to param_dtype / compute_dtype (the BK energies and widths,
                  the hyperbolic head's scalars); default False
    lr_group      "hidden" (fan-in grows with d_model) | "embedding" | absent: the width-aware
                  learning-rate group (`muse_jax/optim/width_scaling.py`)
    layer_axis    the axis of the stacked layers (walked by `lax.scan`, never sharded); absent
                  for parameters outside the stack

`roles(model)` collects them as trees shaped like the model's pure-dict params.
"""

from typing import NamedTuple

import jax
from flax import nnx

DECAY, KEEP_FLOAT32, LR_GROUP, LAYER_AXIS = "decay", "keep_float32", "lr_group", "layer_axis"


def weight_matrix(value: jax.Array, lr_group: str | None = None) -> nnx.Param:
    """A decayed weight (kernel, embedding table, TT core), in `lr_group` if given."""
    return nnx.Param(value, **{DECAY: True}, **({LR_GROUP: lr_group} if lr_group else {}))


def float32_param(value: jax.Array) -> nnx.Param:
    """A parameter kept in float32 whatever the precision settings (not decayed)."""
    return nnx.Param(value, **{KEEP_FLOAT32: True})


def mark_stacked(module: nnx.Module, axis: int = 0) -> None:
    """Record on every Variable of `module` that `axis` stacks layers (after `nnx.vmap`)."""
    for _, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Variable):
            node.set_metadata(LAYER_AXIS, axis)


class ParamRoles(NamedTuple):
    """Trees shaped like the params (pure dicts): one role value per parameter."""

    decay: dict  # bool
    cast: dict  # bool: not keep_float32
    lr_group: dict  # str | None
    layer_axis: dict  # int | None


def roles(model: nnx.Module) -> ParamRoles:
    """The roles of `model`'s parameters (an abstract model from `nnx.eval_shape` is enough)."""
    state = nnx.state(model, nnx.Param)

    def read(name, default, transform=lambda v: v):
        tree = jax.tree.map(lambda v: transform(v.get_metadata().get(name, default)), state,
                            is_leaf=lambda x: isinstance(x, nnx.Variable))
        return nnx.to_pure_dict(tree)

    return ParamRoles(decay=read(DECAY, False), cast=read(KEEP_FLOAT32, False, lambda keep: not keep),
                      lr_group=read(LR_GROUP, None), layer_axis=read(LAYER_AXIS, None))
