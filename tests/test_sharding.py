"""The sharding rule (pure) — multi-device training equality lives in test_sharding_devices.py."""

from jax.sharding import PartitionSpec
from jax.tree_util import DictKey

from muse_jax.train.sharding import leaf_partition_spec

BLOCK = (DictKey("blocks"), DictKey("ffn"), DictKey("up"), DictKey("kernel"))
EMBED = (DictKey("embed"), DictKey("embedding"))


def test_largest_divisible_axis_is_split():
    assert leaf_partition_spec(EMBED, (4096, 128), 4) == PartitionSpec("fsdp", None)
    assert leaf_partition_spec(EMBED, (4098, 128), 4) == PartitionSpec(None, "fsdp")


def test_layer_axis_of_stacked_blocks_is_never_split():
    assert leaf_partition_spec(BLOCK, (8, 128, 384), 8) == PartitionSpec(None, None, "fsdp")
    assert leaf_partition_spec(BLOCK, (8, 129, 383), 8) == PartitionSpec()


def test_small_leaves_and_one_device_are_replicated():
    assert leaf_partition_spec(EMBED, (16, 16), 4) == PartitionSpec()
    assert leaf_partition_spec(EMBED, (), 4) == PartitionSpec()
    assert leaf_partition_spec(EMBED, (4096, 128), 1) == PartitionSpec()
