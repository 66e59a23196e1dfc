"""Device mesh and the one rule that places every array: FSDP-style parameter and optimizer-state
sharding along `fsdp`, batches along (`data`, `fsdp`).

Rule (the only place sharding is decided):
  * a leaf with fewer than `MIN_SHARDED_SIZE` elements, or a scalar, is replicated;
  * otherwise its largest axis whose length divides by the `fsdp` size is split along `fsdp`,
    skipping the stacked-layer axis the model marks on its parameters (`layer_axis`,
    `model/param_roles.py`): `lax.scan` walks that axis, and splitting it would move whole
    layers between devices every iteration;
  * a leaf with no divisible axis is replicated.
Optimizer-state leaves (Adam's moments, EMA, ...) end in their parameter's path and have its
shape, so they follow their parameter. One device is the same code path with a 1×1 mesh. Host offload
(`train.offload_params`, `train.offload_optimizer`) keeps the same specs in the `pinned_host`
memory kind. Batches: every process loads the same global batch and hands its devices only their
rows (`global_batch`).
"""

import math
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from muse_jax.settings import MeshSettings

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
MIN_SHARDED_SIZE = 2**12


def initialize_distributed() -> None:
    """Multi-host: join the job when this process is one of several, before JAX touches a device.

    Either the coordinator is named in the environment — JAX_COORDINATOR_ADDRESS (host:port of
    process 0), JAX_NUM_PROCESSES, JAX_PROCESS_ID — or a cluster JAX detects by itself runs
    more than one task (SLURM `srun`, Open MPI `mpirun`). One process: nothing to do.
    """
    if jax.distributed.is_initialized():
        return
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        count, index = env.get("JAX_NUM_PROCESSES"), env.get("JAX_PROCESS_ID")
        jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], int(count) if count else None,
                                   int(index) if index else None)
    elif int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        jax.distributed.initialize()


def make_mesh(settings: MeshSettings) -> Mesh:
    """A (data, fsdp) mesh over all devices; a size of −1 takes the devices the other leaves."""
    shape = settings.shape(jax.device_count())
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def leaf_partition_spec(layer_axis: int | None, shape: tuple[int, ...], fsdp_size: int) -> PartitionSpec:
    """The rule above for one leaf (`layer_axis`: its stacked-layer axis, None outside the stack)."""
    if fsdp_size == 1 or math.prod(shape) < MIN_SHARDED_SIZE:
        return PartitionSpec()
    candidates = [ax for ax in range(len(shape)) if ax != layer_axis and shape[ax] % fsdp_size == 0]
    if not candidates:
        return PartitionSpec()
    axis = max(candidates, key=lambda ax: (shape[ax], -ax))
    spec = [None] * len(shape)
    spec[axis] = "fsdp"
    return PartitionSpec(*spec)


def param_path(path) -> tuple:
    """The trailing run of dict keys of a key path: a parameter's own path inside any container
    (TrainState.params, an Adam moment, the EMA, ...)."""
    keys = []
    for k in reversed(path):
        if not isinstance(k, jax.tree_util.DictKey):
            break
        keys.append(k.key)
    return tuple(reversed(keys))


def layer_axes_by_path(layer_axis_tree) -> dict[tuple, int | None]:
    """{parameter path: its layer axis} from `ParamRoles.layer_axis`."""
    leaves = jax.tree_util.tree_flatten_with_path(layer_axis_tree, is_leaf=lambda x: x is None)[0]
    return {param_path(path): axis for path, axis in leaves}


def state_shardings(mesh: Mesh, tree, layer_axes: dict[tuple, int | None], memory_kind: str | None = None):
    """NamedShardings for every leaf of a pytree of arrays or ShapeDtypeStructs, in `memory_kind`
    (None: the device's default memory; "pinned_host": host offload). `layer_axes`
    (`layer_axes_by_path`): a leaf whose path ends in a parameter's path skips that parameter's
    layer axis."""
    fsdp_size = mesh.shape["fsdp"]

    def sharding(path, x):
        spec = leaf_partition_spec(layer_axes.get(param_path(path)), tuple(np.shape(x)), fsdp_size)
        return NamedSharding(mesh, spec, memory_kind=memory_kind)

    return jax.tree_util.tree_map_with_path(sharding, tree)


def batch_shards(mesh: Mesh) -> int:
    """How many ways a batch is split: data × fsdp."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def batch_sharding(mesh: Mesh, rows: int | None = None) -> NamedSharding:
    """Batches [B, ...] split over every device along the batch axis; replicated when `rows`
    is given and does not divide by data × fsdp (a short validation set)."""
    if rows is not None and rows % batch_shards(mesh):
        return replicated(mesh)
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(sharding: NamedSharding, batch: dict) -> dict:
    """The host batch (numpy, the same on every process) as global arrays placed by `sharding`.

    Each process transfers only the rows its own devices hold: process i's part of the global
    batch. With one process this is a plain `device_put`.
    """
    return {k: jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
            for k, v in batch.items()}
