"""Device mesh and the one rule that places every array: FSDP-style parameter and optimizer-state
sharding along `fsdp`, batches along (`data`, `fsdp`).

Rule (the only place sharding is decided):
  * a leaf with fewer than `MIN_SHARDED_SIZE` elements, or a scalar, is replicated;
  * otherwise its largest axis whose length divides by the `fsdp` size is split along `fsdp`,
    skipping axis 0 of the stacked layer parameters (paths under `blocks`): `lax.scan` walks that
    axis, and splitting it would move whole layers between devices every iteration;
  * a leaf with no divisible axis is replicated.
Optimizer-state leaves (Adam's moments, EMA, ...) have their parameter's path and shape, so they
follow their parameter. One device is the same code path with a 1×1 mesh.
"""

import math
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
MIN_SHARDED_SIZE = 2**12


def initialize_distributed() -> None:
    """Multi-host: join the job when the coordinator is configured in the environment
    (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or a cluster JAX detects)."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("SLURM_JOB_ID") or os.environ.get(
        "OMPI_COMM_WORLD_SIZE"
    ):
        jax.distributed.initialize()


def make_mesh(data: int, fsdp: int) -> Mesh:
    """A (data, fsdp) mesh over all devices; a size of −1 takes the devices the other leaves."""
    n = jax.device_count()
    if data == -1 and fsdp == -1:
        raise ValueError("mesh.data and mesh.fsdp cannot both be -1")
    if data == -1:
        data = n // fsdp
    if fsdp == -1:
        fsdp = n // data
    if data < 1 or fsdp < 1 or data * fsdp != n:
        raise ValueError(f"mesh.data × mesh.fsdp = {data} × {fsdp} must equal the device count {n}")
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


def state_shardings(mesh: Mesh, tree):
    """NamedShardings for every leaf of a pytree of arrays or ShapeDtypeStructs."""
    fsdp_size = mesh.shape["fsdp"]
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, leaf_partition_spec(path, tuple(np.shape(x)), fsdp_size)), tree
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches [B, ...] split over every device along the batch axis."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(mesh: Mesh, local_batch: dict) -> dict:
    """Assemble this process's slice of the batch into global arrays sharded over the mesh.

    With one process the local batch is the global batch; with several, each process passes
    its own rows (global batch = concatenation over processes in process order).
    """
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(
            sharding, v, (v.shape[0] * jax.process_count(),) + v.shape[1:]
        )
        for k, v in local_batch.items()
    }
