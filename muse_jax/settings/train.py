"""`train.*`: the run's length, batch shape, precision, memory policy, logging and checkpoints."""

import dataclasses

from muse_jax.settings.core import one_of, read_section, require

DTYPES = ("float32", "bfloat16")
COMPUTE_DTYPES = (*DTYPES, "auto")  # auto: bfloat16 on GPU/TPU, float32 on CPU (train/precision.py)
REMAT_POLICIES = ("none", "full", "minimal", "offload")
MAX_GRAD_ACCUM_STEPS = 64
COUNTS = ("steps", "batch_size", "seq_len", "eval_batches", "log_every", "eval_every", "checkpoint_every",
          "keep_checkpoints", "max_skipped_in_a_row")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """See configs/tiny_ja.py for each key; the precision keys are names (`muse_jax/train/precision.py`
    turns them into dtypes, resolving `auto` by the backend), so these settings never import JAX."""

    steps: int = 600
    batch_size: int = 16
    grad_accum_steps: int = 1
    seq_len: int = 128
    remat_policy: str = "none"
    offload_params: bool = False
    offload_optimizer: bool = False
    param_dtype: str = "float32"
    compute_dtype: str = "auto"
    loss_chunk_tokens: int = 0
    label_smoothing: float = 0.0
    ema_decay: float = 0.0
    eval_use_ema: bool = False
    log_every: int = 25
    eval_every: int = 200
    eval_batches: int = 8
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    max_skipped_in_a_row: int = 20
    profile_start: int = 0
    profile_steps: int = 5

    @classmethod
    def from_config(cls, t) -> "TrainSettings":
        s = read_section(cls, t)
        s.check()
        return s

    def check(self) -> None:
        for key in COUNTS:
            require(getattr(self, key) >= 1, f"train.{key} must be >= 1, got {getattr(self, key)}")
        require(1 <= self.grad_accum_steps <= MAX_GRAD_ACCUM_STEPS,
                f"train.grad_accum_steps must be in [1, {MAX_GRAD_ACCUM_STEPS}], got {self.grad_accum_steps}")
        require(self.batch_size % self.grad_accum_steps == 0,
                f"train.batch_size ({self.batch_size}) must be divisible by train.grad_accum_steps "
                f"({self.grad_accum_steps})")
        one_of("train.remat_policy", self.remat_policy, REMAT_POLICIES)
        one_of("train.param_dtype", self.param_dtype, DTYPES)
        one_of("train.compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
        require(self.loss_chunk_tokens >= 0,
                f"train.loss_chunk_tokens must be >= 0 (0 = off), got {self.loss_chunk_tokens}")
        require(0 <= self.label_smoothing < 1, f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        require(0 <= self.ema_decay < 1, f"train.ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")
        require(not self.eval_use_ema or self.ema_decay > 0, "train.eval_use_ema needs train.ema_decay > 0")
        require(self.profile_start >= 0 and self.profile_steps >= 1,
                f"train.profile_start must be >= 0 (0 = off) and train.profile_steps >= 1, "
                f"got {self.profile_start}, {self.profile_steps}")

    @property
    def window(self) -> int:
        """Tokens per training sequence including its last target: seq_len + 1."""
        return self.seq_len + 1

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.grad_accum_steps
