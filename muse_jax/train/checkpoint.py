"""Orbax checkpoints of the train state plus the data iterator's position, verified on save and
restore.

  save     refuses a state with a non-finite value (`NonFiniteState`); Orbax writes the step to
           a temporary folder and renames it when complete, then process 0 writes its checksum
           manifest (`checksums.py`); then older steps are deleted, keeping the newest
           `keep` steps that have a manifest (so an unverified or failing step never pushes the
           last good one out). A failing write is a `WriteError` naming the step's folder.
  restore  the newest step that passes every check: its files against the manifest, Orbax's
           restore, every value finite. A failing step is reported in one line and the one
           before it is tried. Training moves the failing steps newer than the one it resumes
           from to `workdir/checkpoints_unusable/` (never deletes them), so that it can save
           those steps again; evaluation and sampling only skip them. When no step passes,
           `NoUsableCheckpoint` (nothing moved).
"""

import contextlib
import os
import sys
import tempfile
from typing import Any, Callable

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from muse_jax.optim.step_guard import all_finite as finite_values
from muse_jax.train.checksums import has_manifest, manifest_problem, write_manifest
from muse_jax.train.errors import Diverged, NoUsableCheckpoint, WriteError

UNUSABLE_DIR = "checkpoints_unusable"


class NonFiniteState(Diverged):
    """The state to save holds NaN or ±inf: it is not written (exit status 3, like a divergence)."""


_finite = jax.jit(finite_values)


def all_finite(tree) -> bool:
    """Every floating-point value of `tree` is finite. Leaves in device memory are checked by
    one jitted reduction; leaves offloaded to pinned host memory come to the device one at a
    time, so the check never holds an offloaded state on the device whole."""
    floats = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    offloaded = [x for x in floats if x.sharding.memory_kind == "pinned_host"]
    on_device = [x for x in floats if x.sharding.memory_kind != "pinned_host"]
    return bool(_finite(on_device)) and all(
        bool(_finite(jax.device_put(x, x.sharding.with_memory_kind("device")))) for x in offloaded)


def one_line(error: BaseException) -> str:
    """The first line of an exception's message (Orbax's run to dozens), its middle elided past
    400 characters (the end often holds the reason: "No space left on device")."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if len(text) > 400:
        text = f"{text[:200]} ... {text[-180:]}"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def orbax_quiet():
    """Holds back what is written to stderr (file descriptor 2) during the block: written out
    when the block succeeds, dropped when it raises. A failing Orbax save or restore prints
    pages of tracebacks from its threads (absl logs, "Event loop is closed") before it raises;
    the caller reports the failure in one line instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                held.seek(0)
                while chunk := held.read(1 << 16):
                    os.write(2, chunk)


def warn(text: str) -> None:
    if jax.process_index() == 0:
        print(f"warning: {text}", file=sys.stderr, flush=True)


class Checkpointer:
    """Saves `TrainState` (params, optimizer state, step, RNG) and the data iterator state together.

    Arrays are saved sharded: every process writes the shards its devices hold (all processes
    call `save`). Saving is synchronous: the train step donates the state's buffers, so the save
    must have copied them before the next step runs. See the module docstring for the checks.
    """

    def __init__(self, directory: str, keep: int):
        self.directory = os.path.abspath(directory)
        self.keep = keep
        options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True, enable_async_checkpointing=False,
                                               cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    @staticmethod
    def latest_in(directory: str) -> int | None:
        """The latest step saved in `directory` (None if none), without creating anything."""
        if not os.path.isdir(directory):
            return None
        steps = [int(name) for name in os.listdir(directory) if name.isdigit()]
        return max(steps) if steps else None

    def save(self, step: int, state: Any, data_state: dict) -> None:
        if not all_finite(state):
            raise NonFiniteState(f"step {step}: the train state holds non-finite values; not saved "
                                 f"(the last checkpoint is step {max(self.steps(), default=None)})")
        try:
            with orbax_quiet():
                self._manager.save(step, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)
            if jax.process_index() == 0:
                write_manifest(self.step_dir(step))
        except Exception as e:  # disk full, read-only, quota: Orbax raises from its writer threads
            raise WriteError(f"{self.step_dir(step)}: cannot write the checkpoint ({one_line(e)})") from None
        if jax.process_count() > 1:  # every process sees the manifest before deciding what to delete
            multihost_utils.sync_global_devices("muse_jax: checkpoint manifest written")
        self._delete_old()

    def _delete_old(self) -> None:
        """Steps older than the `keep` newest ones with a manifest are deleted."""
        verified = [s for s in self.steps() if has_manifest(self.step_dir(s))]
        if len(verified) > self.keep:
            for step in self.steps():
                if step < verified[-self.keep]:
                    self._manager.delete(step)

    def restore(self, step: int, like: Any) -> tuple[Any, dict]:
        """Restore `step` into the structure, shapes, dtypes and shardings of `like` (arrays, or
        ShapeDtypeStructs carrying shardings): each device reads its own part, so the mesh may
        differ from the one that saved it. No checks: `restore_latest` makes them."""
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

    def restore_latest(self, like: Any, set_aside: bool = False) -> tuple[int, Any, dict] | None:
        """(step, state, data position) of the newest usable step, or None when there is none
        at all; `set_aside`: move the failing newer steps to `checkpoints_unusable/`."""
        found = self._first_usable(lambda step: self.restore(step, like), lambda restored: restored[0], set_aside)
        return None if found is None else (found[0], *found[1])

    def restore_latest_params(self, like: dict) -> tuple[int, dict] | None:
        """(step, parts of the state named in `like`) of the newest usable step (`restore_params`)."""
        return self._first_usable(lambda step: self.restore_params(step, like), lambda params: params, False)

    def _first_usable(self, load: Callable[[int], Any], tree_of: Callable, set_aside: bool):
        failed = []
        for step in reversed(self.steps()):
            problem = manifest_problem(self.step_dir(step))
            value = None
            if problem is None:
                try:
                    with orbax_quiet():
                        value = load(step)
                except Exception as e:  # a damaged or missing file: OCDBT, zstd, a missing item
                    problem = f"cannot be restored: {one_line(e)}"
            if problem is None and not all_finite(tree_of(value)):
                problem = "it holds non-finite values"
            if problem is None:
                if failed and set_aside:
                    self._set_aside(failed)
                return step, value
            warn(f"checkpoint step {step} in {self.directory} is unusable: {problem}")
            failed.append(step)
        if failed:
            raise NoUsableCheckpoint(f"no usable checkpoint in {self.directory} (steps {', '.join(map(str, failed))} "
                                     "failed their checks, see the warnings); move them away to start over")
        return None

    def _set_aside(self, steps: list[int]) -> None:
        """Moves `steps` to `<workdir>/checkpoints_unusable/<step>` (numbered when taken) and reports it."""
        target = os.path.join(os.path.dirname(self.directory), UNUSABLE_DIR)
        if jax.process_index() == 0:
            os.makedirs(target, exist_ok=True)
            for step in steps:
                dst, n = os.path.join(target, str(step)), 1
                while os.path.exists(dst):
                    dst, n = os.path.join(target, f"{step}-{n}"), n + 1
                os.rename(self.step_dir(step), dst)
                warn(f"checkpoint step {step} moved to {dst} (kept for inspection; delete it when done)")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("muse_jax: unusable checkpoints set aside")
        self._manager.reload()

    def close(self) -> None:
        self._manager.close()
