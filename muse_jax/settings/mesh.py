"""`mesh.*` and `hardware.*`: the devices a run uses, and the memory it must fit."""

import dataclasses

from muse_jax.settings.core import read_section, require


@dataclasses.dataclass(frozen=True)
class MeshSettings:
    data: int = 1
    fsdp: int = -1

    @classmethod
    def from_config(cls, m) -> "MeshSettings":
        s = read_section(cls, m)
        require(s.data >= 1 or s.data == -1, f"mesh.data must be >= 1 or -1 (the rest), got {s.data}")
        require(s.fsdp >= 1 or s.fsdp == -1, f"mesh.fsdp must be >= 1 or -1 (the rest), got {s.fsdp}")
        require(not (s.data == -1 and s.fsdp == -1), "mesh.data and mesh.fsdp cannot both be -1")
        return s

    def shape(self, devices: int) -> tuple[int, int]:
        """(data, fsdp) over `devices` devices, −1 resolved to the devices the other leaves."""
        data = devices // self.fsdp if self.data == -1 else self.data
        fsdp = devices // data if self.fsdp == -1 else self.fsdp
        require(data >= 1 and fsdp >= 1 and data * fsdp == devices,
                f"mesh.data × mesh.fsdp = {data} × {fsdp} must equal the device count {devices}")
        return data, fsdp

    def check_batch(self, batch_size: int, devices: int) -> None:
        """The global batch is split over every device: it must divide by data × fsdp."""
        data, fsdp = self.shape(devices)
        require(batch_size % (data * fsdp) == 0,
                f"train.batch_size ({batch_size}) must divide by mesh.data × mesh.fsdp ({data * fsdp}): "
                "the global batch is split over every device")


@dataclasses.dataclass(frozen=True)
class HardwareSettings:
    device_memory_gb: float = 8.0  # --mode=dry_run: the budget the compiled step must fit

    @classmethod
    def from_config(cls, h) -> "HardwareSettings":
        s = read_section(cls, h)
        require(s.device_memory_gb > 0, f"hardware.device_memory_gb must be > 0, got {s.device_memory_gb}")
        return s
