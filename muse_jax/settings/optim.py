"""`optim.*`: the optimizer, its schedule, clipping and skipping, and the training-dynamics transforms
(docs/training.md)."""

import dataclasses
import re

from muse_jax.settings.core import ConfigError, one_of, read_section, require

OPTIMIZERS = ("adamw", "symplectic", "bk_hyper_sgd")
SHORT_RUN_WARMUP_PERCENT = 10  # a warmup not shorter than the run becomes this share of train.steps


@dataclasses.dataclass(frozen=True)
class AdamWSettings:
    lr: float = 3e-3
    b1: float = 0.9
    b2: float = 0.95
    weight_decay: float = 0.1

    def check(self) -> None:
        require(0 <= self.b1 < 1 and 0 <= self.b2 < 1,
                f"optim.adamw.b1 and optim.adamw.b2 must be in [0, 1), got {self.b1}, {self.b2}")
        require(self.weight_decay >= 0, f"optim.adamw.weight_decay must be >= 0, got {self.weight_decay}")


@dataclasses.dataclass(frozen=True)
class SymplecticSettings:
    lr: float = 0.05
    friction: float = 0.1
    precondition: bool = False
    precondition_decay: float = 0.95

    def check(self) -> None:
        require(0 <= self.friction < 1, f"optim.symplectic.friction must be in [0, 1), got {self.friction}")
        require(0 <= self.precondition_decay < 1,
                f"optim.symplectic.precondition_decay must be in [0, 1), got {self.precondition_decay}")


@dataclasses.dataclass(frozen=True)
class BKHyperSGDSettings:
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-3
    poincare_params: str = ""
    poincare_lr_mult: float = 1.0
    orthogonal_params: str = ""
    orthogonal_lr_mult: float = 1.0

    def check(self) -> None:
        require(0 <= self.momentum < 1, f"optim.bk_hyper_sgd.momentum must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0, f"optim.bk_hyper_sgd.weight_decay must be >= 0, got {self.weight_decay}")
        require(self.poincare_lr_mult > 0 and self.orthogonal_lr_mult > 0,
                f"optim.bk_hyper_sgd.poincare_lr_mult and orthogonal_lr_mult must be > 0, "
                f"got {self.poincare_lr_mult}, {self.orthogonal_lr_mult}")
        for key in ("poincare_params", "orthogonal_params"):
            try:
                re.compile(getattr(self, key))
            except re.error as e:
                raise ConfigError(f"optim.bk_hyper_sgd.{key} is not a regular expression: {e}") from None

    def group_of(self, name: str, shape: tuple[int, ...]) -> str:
        """The parameter group ("euclidean", "poincare", "orthogonal") of the parameter at path
        `name` ("blocks/mixer/out/kernel"); a pattern "" selects nothing."""
        in_ball = bool(self.poincare_params) and re.search(self.poincare_params, name) is not None
        orthogonal = bool(self.orthogonal_params) and re.search(self.orthogonal_params, name) is not None
        require(not (in_ball and orthogonal),
                f"parameter {name!r} matches both optim.bk_hyper_sgd.poincare_params and orthogonal_params")
        require(not orthogonal or (len(shape) >= 2 and shape[-1] == shape[-2]),
                f"parameter {name!r} matched by optim.bk_hyper_sgd.orthogonal_params must be square [..., n, n], "
                f"got {shape}")
        return "poincare" if in_ball else "orthogonal" if orthogonal else "euclidean"


@dataclasses.dataclass(frozen=True)
class AlignerSettings:
    enabled: bool = False
    min_alignment: float = 0.0
    strength: float = 1.0
    warmup: int = 50
    reference_decay: float = 0.9

    def check(self) -> None:
        require(-1 <= self.min_alignment <= 0, f"optim.aligner.min_alignment must be in [-1, 0], got {self.min_alignment}")
        require(0 <= self.strength <= 1, f"optim.aligner.strength must be in [0, 1], got {self.strength}")
        require(0 <= self.reference_decay < 1,
                f"optim.aligner.reference_decay must be in [0, 1), got {self.reference_decay}")
        require(self.warmup >= 0, f"optim.aligner.warmup must be >= 0, got {self.warmup}")


@dataclasses.dataclass(frozen=True)
class TSPSettings:
    enabled: bool = False
    lr_scales: tuple = (1.5, 1.2, 1.0, 0.8, 1.0)
    clip_scales: tuple = (2.0, 1.5, 1.2, 1.0, 1.0)
    eval_interval: int = 25
    window_size: int = 25
    loss_cv_threshold: float = 0.02
    grad_cv_threshold: float = 0.3
    epsilon: float = 0.1
    min_dwell: int = 50

    def check(self) -> None:
        require(len(self.lr_scales) == len(self.clip_scales) >= 1,
                f"optim.tsp: every city needs one value per hyperparameter (lr_scales, clip_scales of one "
                f"length), got {self.lr_scales}, {self.clip_scales}")
        require(all(x > 0 for x in (*self.lr_scales, *self.clip_scales)),
                f"optim.tsp.lr_scales and clip_scales must be > 0, got {self.lr_scales}, {self.clip_scales}")
        require(self.eval_interval >= 1 and self.window_size >= 2 and self.min_dwell >= 0 and 0 <= self.epsilon <= 1,
                f"optim.tsp needs eval_interval >= 1, window_size >= 2, min_dwell >= 0, epsilon in [0, 1]; got "
                f"{self.eval_interval}, {self.window_size}, {self.min_dwell}, {self.epsilon}")

    def cities(self) -> dict[str, tuple]:
        """The hyperparameter values of each city, by the name the optimizer injects."""
        return {"lr_scale": tuple(self.lr_scales), "clip_scale": tuple(self.clip_scales)}


@dataclasses.dataclass(frozen=True)
class OptimSettings:
    name: str = "adamw"
    lr_base_width: int = 128
    embed_lr_mult: float = 32.0
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_clip_warmup: float = 1.0
    clip_warmup_steps: int = 0
    grad_skip_threshold: float = 0.0
    adamw: AdamWSettings = AdamWSettings()
    symplectic: SymplecticSettings = SymplecticSettings()
    bk_hyper_sgd: BKHyperSGDSettings = BKHyperSGDSettings()
    aligner: AlignerSettings = AlignerSettings()
    tsp: TSPSettings = TSPSettings()

    @classmethod
    def from_config(cls, o) -> "OptimSettings":
        subs = {"adamw": AdamWSettings, "symplectic": SymplecticSettings, "bk_hyper_sgd": BKHyperSGDSettings,
                "aligner": AlignerSettings, "tsp": TSPSettings}
        s = read_section(cls, o, **{k: read_section(c, o[k]) for k, c in subs.items()})
        s.check()
        return s

    def check(self) -> None:
        one_of("optim.name", self.name, OPTIMIZERS)
        require(self.peak_lr > 0 and self.peak_lr < float("inf"),
                f"optim.{self.name}.lr must be a finite number > 0, got {self.peak_lr}")
        require(self.lr_base_width >= 0, f"optim.lr_base_width must be >= 0 (0 = off), got {self.lr_base_width}")
        require(self.embed_lr_mult > 0, f"optim.embed_lr_mult must be > 0, got {self.embed_lr_mult}")
        require(self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        require(0 <= self.min_lr_ratio <= 1, f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        require(self.grad_clip_warmup > 0 and self.grad_clip > 0 and self.clip_warmup_steps >= 0,
                f"optim.grad_clip_warmup, optim.grad_clip must be > 0 and optim.clip_warmup_steps >= 0, "
                f"got {self.grad_clip_warmup}, {self.grad_clip}, {self.clip_warmup_steps}")
        require(self.grad_skip_threshold >= 0, f"optim.grad_skip_threshold must be >= 0 (0 = off), "
                                               f"got {self.grad_skip_threshold}")
        for sub in (self.adamw, self.symplectic, self.bk_hyper_sgd, self.aligner, self.tsp):
            sub.check()

    def fitted_to_run(self, steps: int) -> tuple["OptimSettings", str]:
        """These settings for a run of `steps` optimizer steps, and a note for the user ("" if
        unchanged). A warmup as long as the run or longer (a short run of a config made for a long
        one) is shortened: warmup_steps ← ⌊SHORT_RUN_WARMUP_PERCENT · steps / 100⌋."""
        if self.warmup_steps < steps:
            return self, ""
        warmup = SHORT_RUN_WARMUP_PERCENT * steps // 100
        return dataclasses.replace(self, warmup_steps=warmup), (
            f"optim.warmup_steps={self.warmup_steps} is not shorter than train.steps={steps}: warming up for "
            f"{warmup} steps instead ({SHORT_RUN_WARMUP_PERCENT}% of the run)")

    @property
    def peak_lr(self) -> float:
        """The peak learning rate of the chosen optimizer (`optim.<name>.lr`)."""
        return float(getattr(self, self.name).lr)
