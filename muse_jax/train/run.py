"""A run: its settings, prepared data, model and train state on the mesh, and its checkpoints.

Multi-host: every process builds the same run (`sharding.initialize_distributed` joins them);
each walks the same data stream and hands its devices only their rows of every batch, so the
data order and the loader's checkpointed position do not depend on the process count. Process 0
prepares the data while the others wait.
"""

import os

import jax
from flax import nnx
from jax.experimental import multihost_utils

from muse_jax.data.errors import DataError
from muse_jax.data.mixture import train_dataset, validation_tokens
from muse_jax.data.packing import eval_window_tokens, window_batches
from muse_jax.data.prepared import PreparedData, prepared_for_training
from muse_jax.data.synthetic import SyntheticTask
from muse_jax.model.lm import build_model
from muse_jax.settings import DataSettings, Settings
from muse_jax.train.checkpoint import Checkpointer
from muse_jax.train.errors import NoCheckpoint
from muse_jax.train.optimizer import parameter_groups
from muse_jax.train.sharding import initialize_distributed
from muse_jax.train.state import TrainSetup
from muse_jax.train.step import TrainState, evaluate


def check_before_work(settings: Settings) -> None:
    """The checks that need the devices or the model's parameters, made before anything is
    prepared or written (each a ConfigError from the settings): the mesh fits the devices, the
    batch splits over them, every parameter has an optimizer group."""
    initialize_distributed()  # before JAX touches a device
    settings.mesh.check_batch(settings.train.batch_size, jax.device_count())
    model = nnx.eval_shape(lambda: build_model(settings, settings.data.model_vocab_size, nnx.Rngs(0)))
    parameter_groups(settings.optim, model)


def prepared_once(settings: DataSettings) -> PreparedData:
    """The prepared data; with several processes, process 0 prepares it (when missing) while the
    others wait, then they read it (the data folder must be on a filesystem they share)."""
    if jax.process_count() == 1:
        return prepared_for_training(settings)
    data = prepared_for_training(settings) if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("muse_jax: data prepared")
    return data or prepared_for_training(settings)


def checkpoints_dir(settings: Settings) -> str:
    return os.path.join(settings.workdir, "checkpoints")


class Run:
    """What training and evaluation need, built once from the settings: data (the prepared corpus,
    or a synthetic task: `data.synthetic`), model, optimizer, mesh, checkpoints. The state exists
    after `restore_latest()`: restored from the latest checkpoint, or created."""

    def __init__(self, settings: Settings):
        check_before_work(settings)
        self.settings = settings
        self.workdir = settings.workdir
        os.makedirs(self.workdir, exist_ok=True)
        t = settings.train
        if settings.data.synthetic.enabled:
            self.task: SyntheticTask | None = SyntheticTask(settings.data.synthetic)
            self.data: PreparedData | None = None
            self.vocab_size = self.task.vocab_size
            self.val_tokens = None
        else:
            self.task = None
            self.data = prepared_once(settings.data)
            self.vocab_size = self.data.vocab_size
            # validation: the tokens of train.eval_batches batches of train.seq_len windows, read once
            self.val_tokens = eval_window_tokens(
                validation_tokens(self.data, t.eval_batches * t.batch_size * t.seq_len + 1),
                t.seq_len, t.batch_size, t.eval_batches)
        self.setup = TrainSetup(settings, self.vocab_size)
        self.checkpointer = Checkpointer(checkpoints_dir(settings), t.keep_checkpoints)
        self.state: TrainState | None = None
        self.data_state = None

    def describe_data(self) -> str:
        if self.task is not None:
            return self.task.describe()
        return f"train tokens {self.data.meta['train_tokens']:,}, val tokens {self.data.meta['val_tokens']:,}"

    def train_batches(self):
        """The training stream (an iterator with get_state / set_state): packed corpus windows or
        the synthetic task's batches, in the order of `seed`."""
        t = self.settings.train
        if self.task is not None:
            return self.task.train_batches(t.seq_len, t.batch_size, self.settings.seed)
        return iter(train_dataset(self.data, t.seq_len, t.batch_size, self.settings.seed))

    def restore_latest(self, set_aside: bool = False) -> bool:
        """The state from the newest usable checkpoint, onto this run's mesh (True), or a new one
        (False) when there is no checkpoint; `set_aside`: move failing newer steps away (training)."""
        found = self.checkpointer.restore_latest(self.setup.abstract, set_aside)
        if found is None:
            self.state = self.setup.create()
            return False
        _, self.state, self.data_state = found
        return True

    def eval_params(self, state: TrainState):
        """The weights that evaluation and sampling use: the EMA if train.eval_use_ema; in device
        memory (a copy when train.offload_params keeps them on the host)."""
        return self.setup.on_device(state.ema_params if self.settings.train.eval_use_ema else state.params)

    def validation(self, params, tokens=None, seq_len: int | None = None, position_buckets: int = 0,
                   task: SyntheticTask | None = None) -> dict:
        """Mean loss (`evaluate`) on the validation set in windows of `seq_len` (default
        train.seq_len), or on every window of `tokens`. The validation set: the synthetic task's
        held-out batches (train.eval_batches of them; `task` instead of the run's: the same kind
        with other keys), or the validation tokens that train.eval_batches batches of
        train.seq_len windows cover, cut into windows of `seq_len` — a longer window sees the same
        targets with more context."""
        t = self.settings.train
        seq_len = seq_len or t.seq_len
        task = task or self.task
        if task is not None:
            batches = task.eval_batches(seq_len, t.batch_size, t.eval_batches)
        else:
            tokens = self.val_tokens if tokens is None else tokens
            if len(tokens) < seq_len + 1:
                raise DataError(f"{len(tokens)} evaluation tokens, too few for one window of {seq_len} + 1")
            batches = window_batches(tokens, seq_len, t.batch_size)
        return evaluate(self.setup.eval_step, params, (self.setup.place_batch(b) for b in batches), position_buckets)


def no_checkpoint(settings: Settings) -> NoCheckpoint:
    return NoCheckpoint(f"no checkpoint in {checkpoints_dir(settings)}; train first")


def require_checkpoint(settings: Settings) -> int:
    """The latest saved step, checked before anything is prepared: NoCheckpoint if there is none."""
    step = Checkpointer.latest_in(checkpoints_dir(settings))
    if step is None:
        raise no_checkpoint(settings)
    return step


def restored_run(settings: Settings) -> Run:
    """The run of `settings.workdir`, its state restored from the newest usable checkpoint."""
    require_checkpoint(settings)
    run = Run(settings)
    if not run.restore_latest():
        raise no_checkpoint(settings)
    return run
