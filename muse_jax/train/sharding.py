"""Device mesh and the one rule that places every array: FSDP-style parameter and optimizer-state
sharding along `fsdp`, batches along (`data`, `fsdp`).

Rule (the only place sharding is decided):
  * a leaf with fewer than `MIN_SHARDED_SIZE` elements, or a scalar, is replicated;
  * otherwise its largest axis whose length divides by the `fsdp` size is split along `fsdp`,
    skipping axis 0 of the stacked layer parameters (paths under `blocks`): `lax.scan` walks that
    axis, and splitting it would move whole layers between devices every iteration;
  * a leaf with no divisible axis is replicated.
Optimizer-state leaves (Adam's moments, EMA, ...) have their parameter's path and shape, so they
follow their parameter. One device is the same code path with a 1×1 mesh. Host offload
(`train.offload_params`, `train.offload_optimizer`) keeps the same specs in the `pinned_host`
memory kind. Batches: every process loads the same global batch and hands its devices only their
rows (`global_batch`).
"""

import math
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from muse_jax.config_error import ConfigError

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


def make_mesh(data: int, fsdp: int) -> Mesh:
    """A (data, fsdp) mesh over all devices; a size of −1 takes the devices the other leaves."""
    n = jax.device_count()
    if data == -1 and fsdp == -1:
        raise ConfigError("mesh.data and mesh.fsdp cannot both be -1")
    if data == -1:
        data = n // fsdp
    if fsdp == -1:
        fsdp = n // data
    if data < 1 or fsdp < 1 or data * fsdp != n:
        raise ConfigError(f"mesh.data × mesh.fsdp = {data} × {fsdp} must equal the device count {n}")
    return jax.make_mesh((data, fsdp), MESH_AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def _is_stacked_layer(path) -> bool:
    return any(getattr(k, "key", None) == "blocks" for k in path)


def leaf_partition_spec(path, shape: tuple[int, ...], fsdp_size: int) -> PartitionSpec:
    """The rule above for one leaf."""
    if fsdp_size == 1 or math.prod(shape) < MIN_SHARDED_SIZE:
        return PartitionSpec()
    first = 1 if _is_stacked_layer(path) else 0
    candidates = [ax for ax in range(first, len(shape)) if shape[ax] % fsdp_size == 0]
    if not candidates:
        return PartitionSpec()
    axis = max(candidates, key=lambda ax: (shape[ax], -ax))
    spec = [None] * len(shape)
    spec[axis] = "fsdp"
    return PartitionSpec(*spec)


def state_shardings(mesh: Mesh, tree, memory_kind: str | None = None):
    """NamedShardings for every leaf of a pytree of arrays or ShapeDtypeStructs, in `memory_kind`
    (None: the device's default memory; "pinned_host": host offload)."""
    fsdp_size = mesh.shape["fsdp"]
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, leaf_partition_spec(path, tuple(np.shape(x)), fsdp_size),
                                      memory_kind=memory_kind),
        tree,
    )


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
