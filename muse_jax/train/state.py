"""The train state of a run, placed on its device mesh; one object serves training, evaluation,
generation and the dry run.

  mesh        `mesh.data` × `mesh.fsdp` devices (`sharding.make_mesh`)
  abstract    the TrainState's shapes and dtypes, each with its NamedSharding (nothing allocated)
  shardings   where the state lives between steps: the rule of `sharding.py`, one per leaf, in
              pinned host memory for the parts offloaded (`train.offload_params`: params and EMA;
              `train.offload_optimizer`: optimizer state)
  device_shardings  the same specs in device memory: where the step brings the state to work
  create()    the initial state (layer weights in `train.param_dtype`), built by one jitted
              function straight into its shardings, so no parameter ever exists whole on one device
  train_step  `step.make_train_step`, jitted with explicit in/out shardings, state donated
  phases      its two halves (gradients, update), which the dry run also measures alone
  eval_step   the same for evaluation (one per validation batch shape)
A checkpoint restores into `abstract`: a run saved on one mesh resumes on another (orbax reads
each device's part of every array from the saved shards).
"""

import jax
import ml_collections
from flax import nnx

from muse_jax.config_error import ConfigError
from muse_jax.model.lm import build_model
from muse_jax.train.optimizer import build_optimizer
from muse_jax.train.precision import Precision, cast_weights
from muse_jax.train.sharding import batch_sharding, batch_shards, global_batch, make_mesh, replicated, state_shardings
from muse_jax.train.step import StepShardings, TrainState, make_eval_step, make_step_phases, make_train_step


class TrainSetup:
    """Everything about the state of a run that depends on the config and the devices, not on data."""

    def __init__(self, cfg: ml_collections.ConfigDict, vocab_size: int):
        self.mesh = make_mesh(int(cfg.mesh.data), int(cfg.mesh.fsdp))
        seed = int(cfg.seed)
        abstract_model = nnx.eval_shape(lambda: build_model(cfg, vocab_size, nnx.Rngs(seed)))
        tx = build_optimizer(cfg.optim, int(cfg.train.steps), seed, abstract_model)
        self.graphdef, _ = nnx.split(abstract_model)
        self.phases = make_step_phases(self.graphdef, tx, cfg.train, batch_sharding(self.mesh))
        init_state = self.phases.init_state
        self.precision = Precision.from_config(cfg.train)

        def create() -> TrainState:
            params = nnx.to_pure_dict(nnx.state(build_model(cfg, vocab_size, nnx.Rngs(seed))))
            return init_state(cast_weights(params, self.precision.param_dtype), jax.random.PRNGKey(seed))

        self.shapes = shapes = jax.eval_shape(create)
        self.device_shardings: TrainState = state_shardings(self.mesh, shapes)
        host = state_shardings(self.mesh, shapes, memory_kind="pinned_host")
        self.offload_params, offload_optimizer = bool(cfg.train.offload_params), bool(cfg.train.offload_optimizer)
        self.shardings: TrainState = self.device_shardings._replace(
            params=host.params if self.offload_params else self.device_shardings.params,
            ema_params=host.ema_params if self.offload_params else self.device_shardings.ema_params,
            opt_state=host.opt_state if offload_optimizer else self.device_shardings.opt_state)
        self.abstract: TrainState = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.shardings)
        self._create = jax.jit(create, out_shardings=self.shardings)
        placement = StepShardings(self.shardings, self.device_shardings, batch_sharding(self.mesh),
                                  replicated(self.mesh))
        _, self.train_step = make_train_step(self.graphdef, tx, cfg.train, placement)
        self._eval_steps: dict = {}

    def create(self) -> TrainState:
        """The initial state (seeded by `seed`), in its shardings."""
        return self._create()

    def check_batch_size(self, batch_size: int) -> None:
        shards = batch_shards(self.mesh)
        if batch_size % shards:
            raise ConfigError(f"train.batch_size ({batch_size}) must divide by mesh.data × mesh.fsdp ({shards}): "
                             "the global batch is split over every device")

    def on_device(self, params):
        """Params (or the EMA) in device memory, for evaluation and sampling: a copy when offloaded."""
        return jax.device_put(params, self.device_shardings.params) if self.offload_params else params

    def place_batch(self, batch: dict) -> dict:
        """A host batch (the same on every process) as global arrays split along (data, fsdp)."""
        return global_batch(batch_sharding(self.mesh, batch["inputs"].shape[0]), batch)

    def eval_step(self, rows: int):
        """The jitted eval step for batches of `rows` sequences (split along the batch when the
        rows divide by data × fsdp, else replicated), on params in device memory (`on_device`)."""
        if rows not in self._eval_steps:
            self._eval_steps[rows] = make_eval_step(self.graphdef, self.device_shardings.params,
                                                    batch_sharding(self.mesh, rows), self.precision.compute_dtype)
        return self._eval_steps[rows]
