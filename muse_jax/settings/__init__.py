"""Typed settings: the config read and checked once, before anything is prepared or compiled.

    cfg (ml_collections, locked) ──Settings.from_config──▶ Settings (frozen dataclasses)
                                                            ├─ model: ModelSettings (bk: BKSettings)
                                                            ├─ train: TrainSettings (precision included)
                                                            ├─ optim: OptimSettings (adamw, symplectic, …)
                                                            ├─ mesh, hardware, data (synthetic), sample
                                                            ├─ eval: EvalSettings (--mode=eval's window)

`python -m muse_jax.main` builds it once; every module below takes settings, never a ConfigDict,
and `ConfigError` (one line naming the key, exit 2) is raised only here. Settings never import
JAX, so `--mode=prepare` stays JAX-free.
"""

import dataclasses

from muse_jax.settings.core import ConfigError, UnsupportedBackend, require, require_finite_numbers
from muse_jax.settings.data import DataSettings
from muse_jax.settings.evaluation import EvalSettings
from muse_jax.settings.mesh import HardwareSettings, MeshSettings
from muse_jax.settings.model import BKSettings, ModelSettings
from muse_jax.settings.optim import OptimSettings
from muse_jax.settings.sample import SampleSettings
from muse_jax.settings.synthetic import SyntheticSettings
from muse_jax.settings.train import TrainSettings

__all__ = ["BKSettings", "ConfigError", "DataSettings", "EvalSettings", "HardwareSettings", "MeshSettings",
           "ModelSettings", "OptimSettings", "SampleSettings", "Settings", "SyntheticSettings", "TrainSettings",
           "UnsupportedBackend"]


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
    eval: EvalSettings
    notes: tuple[str, ...] = ()  # one line each, for the user: values adjusted to the run (printed by main)

    @classmethod
    def from_config(cls, cfg) -> "Settings":
        """Every key of `cfg` read and checked, each section alone and then against each other."""
        workdir = str(cfg.workdir)
        require(bool(workdir), "workdir must be a directory path, got ''")
        train = TrainSettings.from_config(cfg.train)
        optim, note = OptimSettings.from_config(cfg.optim).fitted_to_run(train.steps)
        s = cls(workdir=workdir, seed=int(cfg.seed), model=ModelSettings.from_config(cfg.model), train=train,
                optim=optim, mesh=MeshSettings.from_config(cfg.mesh),
                hardware=HardwareSettings.from_config(cfg.hardware), data=DataSettings.from_config(cfg.data),
                sample=SampleSettings.from_config(cfg.sample), eval=EvalSettings.from_config(cfg.eval, train.seq_len),
                notes=(note,) if note else ())
        s.data.synthetic.check_length(s.train.seq_len, "train.seq_len")
        s.data.synthetic.check_length(s.eval.seq_len, "eval.seq_len")
        require_finite_numbers(cfg)  # the keys no section check has caught
        return s
