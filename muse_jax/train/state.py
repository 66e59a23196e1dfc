"""The model and train state of a run, placed on its device mesh.

`ModelSetup` is what evaluation and sampling need: the model's graph, its parameter roles
(`model/param_roles.py`), where parameters live, the compute precision and the eval step — no
optimizer. `TrainSetup` adds the optimizer, the whole train state and the train step.

  mesh        `mesh.data` × `mesh.fsdp` devices (`sharding.make_mesh`)
  abstract    the TrainState's shapes and dtypes, each with its NamedSharding (nothing allocated)
  shardings   where the state lives between steps: the rule of `sharding.py`, one per leaf, in
              pinned host memory for the parts offloaded (`train.offload_params`: params and EMA;
              `train.offload_optimizer`: optimizer state)
  device_shardings  the same specs in device memory: where the step brings the state to work
  create()    the initial state (parameters in `train.param_dtype`), built by one jitted
              function straight into its shardings, so no parameter ever exists whole on one device
  train_step  `step.make_train_step`, jitted with explicit in/out shardings, state donated
  phases      its two halves (gradients, update), which the dry run also measures alone
  eval_step   the same for evaluation (one per validation batch shape)
A checkpoint restores into `abstract`: a run saved on one mesh resumes on another (orbax reads
each device's part of every array from the saved shards).
"""

import jax
from flax import nnx

from muse_jax.generate import Generator
from muse_jax.model.lm import build_model
from muse_jax.model.param_roles import roles
from muse_jax.settings import SampleSettings, Settings
from muse_jax.train.optimizer import build_optimizer
from muse_jax.train.precision import Precision, cast_weights
from muse_jax.train.sharding import (
    batch_sharding, global_batch, layer_axes_by_path, make_mesh, replicated, state_shardings,
)
from muse_jax.train.step import StepShardings, TrainState, make_eval_step, make_step_phases, make_train_step


class ModelSetup:
    """The model of a run on its mesh (see the module docstring): enough to evaluate and sample."""

    def __init__(self, settings: Settings, vocab_size: int):
        self.settings = settings
        self.mesh = make_mesh(settings.mesh)
        self.precision = Precision.of(settings.train)
        self.abstract_model = nnx.eval_shape(lambda: build_model(settings, vocab_size, nnx.Rngs(settings.seed)))
        self.graphdef, _ = nnx.split(self.abstract_model)
        self.roles = roles(self.abstract_model)
        self.layer_axes = layer_axes_by_path(self.roles.layer_axis)
        self.offload_params = settings.train.offload_params

        def initial_params():
            params = nnx.to_pure_dict(nnx.state(build_model(settings, vocab_size, nnx.Rngs(settings.seed))))
            return cast_weights(params, self.precision.param_dtype, self.roles.cast)

        self.initial_params = initial_params
        self.param_shapes = jax.eval_shape(initial_params)
        self.device_param_shardings = state_shardings(self.mesh, self.param_shapes, self.layer_axes)
        self._eval_steps: dict = {}

    def abstract_params(self):
        """The parameters' shapes and dtypes with their device shardings (to restore into)."""
        return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            self.param_shapes, self.device_param_shardings)

    def cast_for_compute(self, params):
        """`params` as the forward pass sees them: cast to `train.compute_dtype` where allowed."""
        return cast_weights(params, self.precision.compute_dtype, self.roles.cast)

    def generator(self, sample: SampleSettings, eos_id: int) -> Generator:
        """The one place a Generator is built: this model's graph, sampling as `sample.*` says,
        the forward pass in the run's compute dtype."""
        return Generator(self.graphdef, sample, eos_id, cast=self.cast_for_compute)

    def place_batch(self, batch: dict) -> dict:
        """A host batch (the same on every process) as global arrays split along (data, fsdp)."""
        return global_batch(batch_sharding(self.mesh, batch["inputs"].shape[0]), batch)

    def eval_step(self, rows: int):
        """The jitted eval step for batches of `rows` sequences (split along the batch when the
        rows divide by data × fsdp, else replicated), on params in device memory."""
        if rows not in self._eval_steps:
            self._eval_steps[rows] = make_eval_step(self.graphdef, self.device_param_shardings,
                                                    batch_sharding(self.mesh, rows), self.precision.compute_dtype,
                                                    self.roles.cast)
        return self._eval_steps[rows]


class TrainSetup(ModelSetup):
    """Everything about the state of a run that depends on the settings and the devices, not on data."""

    def __init__(self, settings: Settings, vocab_size: int):
        super().__init__(settings, vocab_size)
        t = settings.train
        tx = build_optimizer(settings.optim, t.steps, settings.seed, self.abstract_model)
        self.phases = make_step_phases(self.graphdef, tx, t, self.roles.cast, batch_sharding(self.mesh))
        init_state, initial_params = self.phases.init_state, self.initial_params

        def create() -> TrainState:
            return init_state(initial_params(), jax.random.PRNGKey(settings.seed))

        self.shapes = shapes = jax.eval_shape(create)
        self.device_shardings: TrainState = state_shardings(self.mesh, shapes, self.layer_axes)
        host = state_shardings(self.mesh, shapes, self.layer_axes, memory_kind="pinned_host")
        self.shardings: TrainState = self.device_shardings._replace(
            params=host.params if self.offload_params else self.device_shardings.params,
            ema_params=host.ema_params if self.offload_params else self.device_shardings.ema_params,
            opt_state=host.opt_state if t.offload_optimizer else self.device_shardings.opt_state)
        self.abstract: TrainState = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.shardings)
        self._create = jax.jit(create, out_shardings=self.shardings)
        placement = StepShardings(self.shardings, self.device_shardings, batch_sharding(self.mesh),
                                  replicated(self.mesh))
        _, self.train_step = make_train_step(self.graphdef, tx, t, self.roles.cast, placement)

    def create(self) -> TrainState:
        """The initial state (seeded by `seed`), in its shardings."""
        return self._create()

    def on_device(self, params):
        """Params (or the EMA) in device memory, for evaluation and sampling: a copy when offloaded."""
        return jax.device_put(params, self.device_shardings.params) if self.offload_params else params
