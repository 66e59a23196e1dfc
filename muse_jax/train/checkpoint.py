"""Orbax checkpoints of the train state plus the data iterator's position."""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves `TrainState` (params, optimizer state, step, RNG) and the data iterator state together.

    Arrays are saved sharded: every process writes the shards its devices hold (all processes
    call `save`). Saving is synchronous: the train step donates the state's buffers, so the save must have
    copied them before the next step runs. Orbax writes each step to a temporary directory and
    renames it when complete, so an interrupted save never shadows the previous checkpoint.
    """

    def __init__(self, directory: str, max_to_keep: int):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
        )
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    @staticmethod
    def latest_in(directory: str) -> int | None:
        """The latest step saved in `directory` (None if none), without creating anything."""
        if not os.path.isdir(directory):
            return None
        steps = [int(name) for name in os.listdir(directory) if name.isdigit()]
        return max(steps) if steps else None

    def save(self, step: int, state: Any, data_state: dict) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
            force=True,
        )

    def restore(self, step: int, like: Any) -> tuple[Any, dict]:
        """Restore `step` into the structure, shapes, dtypes and shardings of `like` (arrays, or
        ShapeDtypeStructs carrying shardings): each device reads its own part, so the mesh may
        differ from the one that saved it."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()),
        )
        return restored["state"], restored["data"]

    def restore_params(self, step: int, like: dict) -> dict:
        """Only the parts of the saved train state named in `like` (e.g. {"params": ...} or
        {"ema_params": ...}, ShapeDtypeStructs with shardings): what sampling needs, without the
        optimizer state."""
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=like, restore_args=ocp.checkpoint_utils.construct_restore_args(like), partial_restore=True)))
        return restored["state"]

    def close(self) -> None:
        self._manager.close()
