"""Typed settings: the config read and checked once, before anything is prepared or compiled.

    cfg (ml_collections, locked) ──Settings.from_config──▶ Settings (frozen dataclasses)
                                                            ├─ model: ModelSettings (bk: BKSettings)
                                                            ├─ train: TrainSettings (precision included)
                                                            ├─ optim: OptimSettings (adamw, symplectic, …)
                                                            ├─ mesh, hardware, data, sample

`python -m muse_jax.main` builds it once; every module below takes settings, never a ConfigDict,
and `ConfigError` (one line naming the key, exit 2) is raised only here. Settings never import
JAX, so `--mode=prepare` stays JAX-free.
"""

import dataclasses

from muse_jax.settings.core import ConfigError, require, require_finite_numbers
from muse_jax.settings.data import DataSettings
from muse_jax.settings.mesh import HardwareSettings, MeshSettings
from muse_jax.settings.model import BKSettings, ModelSettings
from muse_jax.settings.optim import OptimSettings
from muse_jax.settings.sample import SampleSettings
from muse_jax.settings.train import TrainSettings

__all__ = ["BKSettings", "ConfigError", "DataSettings", "HardwareSettings", "MeshSettings", "ModelSettings",
           "OptimSettings", "SampleSettings", "Settings", "TrainSettings"]


@dataclasses.dataclass(frozen=True)
class Settings:
    workdir: str
    seed: int
    model: ModelSettings
    train: TrainSettings
    optim: OptimSettings
    mesh: MeshSettings
    hardware: HardwareSettings
    data: DataSettings
    sample: SampleSettings

    @classmethod
    def from_config(cls, cfg) -> "Settings":
        """Every key of `cfg` read and checked, each section alone and then against each other."""
        workdir = str(cfg.workdir)
        require(bool(workdir), "workdir must be a directory path, got ''")
        s = cls(workdir=workdir, seed=int(cfg.seed), model=ModelSettings.from_config(cfg.model),
                train=TrainSettings.from_config(cfg.train), optim=OptimSettings.from_config(cfg.optim),
                mesh=MeshSettings.from_config(cfg.mesh), hardware=HardwareSettings.from_config(cfg.hardware),
                data=DataSettings.from_config(cfg.data, workdir), sample=SampleSettings.from_config(cfg.sample))
        require(s.optim.warmup_steps < s.train.steps,
                f"optim.warmup_steps must be in [0, train.steps), got {s.optim.warmup_steps}")
        require_finite_numbers(cfg)  # the keys no section check has caught
        return s
