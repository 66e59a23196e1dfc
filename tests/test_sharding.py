"""The sharding rule (pure), and that it follows the roles the model gives its parameters, not
their names — multi-device training equality lives in test_sharding_devices.py."""

import jax
import optax
from flax import nnx
from jax.sharding import PartitionSpec

from configs.tiny_ja import get_config
from muse_jax.model.lm import LanguageModel
from muse_jax.model.param_roles import roles
from muse_jax.settings import ModelSettings
from muse_jax.train.sharding import layer_axes_by_path, leaf_partition_spec, param_path

STACKED = 0  # the layer axis of a block parameter
OUTSIDE = None  # a parameter outside the layer stack


def test_largest_divisible_axis_is_split():
    assert leaf_partition_spec(OUTSIDE, (4096, 128), 4) == PartitionSpec("fsdp", None)
    assert leaf_partition_spec(OUTSIDE, (4098, 128), 4) == PartitionSpec(None, "fsdp")


def test_layer_axis_of_stacked_blocks_is_never_split():
    assert leaf_partition_spec(STACKED, (8, 128, 384), 8) == PartitionSpec(None, None, "fsdp")
    assert leaf_partition_spec(STACKED, (8, 129, 383), 8) == PartitionSpec()
    assert leaf_partition_spec(OUTSIDE, (8, 129, 383), 8) == PartitionSpec("fsdp", None, None)


def test_small_leaves_and_one_device_are_replicated():
    assert leaf_partition_spec(OUTSIDE, (16, 16), 4) == PartitionSpec()
    assert leaf_partition_spec(OUTSIDE, (), 4) == PartitionSpec()
    assert leaf_partition_spec(OUTSIDE, (4096, 128), 1) == PartitionSpec()


def specs(model: nnx.Module, fsdp: int = 8) -> dict:
    """{path with the stack called "stack": the rule's spec} for every parameter and Adam moment."""
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    axes = layer_axes_by_path(roles(model).layer_axis)
    trees = {"params": params, "adam": jax.eval_shape(optax.adam(1e-3).init, params)}
    return {(name, *("stack" if k in ("blocks", "layers") else k for k in param_path(path))):
            leaf_partition_spec(axes.get(param_path(path)), tuple(x.shape), fsdp)
            for name, tree in trees.items() for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def test_renaming_the_layer_stack_keeps_the_sharding():
    """The layer axis is metadata on the parameters: move the stack to another attribute and
    every parameter (and its Adam moments) is placed as before — never split along the layers,
    even where the layer count is the largest axis that divides (a name rule would split it)."""
    c = get_config().model
    c.d_model, c.n_layers = 32, 128
    model = nnx.eval_shape(lambda: LanguageModel(ModelSettings.from_config(c), 512, rngs=nnx.Rngs(0)))
    before = specs(model)
    energy = ("params", "stack", "mixer", "energy")  # [128 layers, 64 channels]
    assert before[energy] == PartitionSpec(None, "fsdp")
    model.layers = model.blocks
    del model.blocks
    assert specs(model) == before
