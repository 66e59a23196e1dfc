"""`sample.*`: how tokens are chosen by --mode=generate, --mode=chat and the end-of-training sample."""

import dataclasses

from muse_jax.settings.core import read_section, require


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """Hashable: a static argument of the jitted sampler."""

    max_new_tokens: int = 48
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off; > 1 discourages tokens already in the context
    seed: int = -1  # >= 0: a fixed sampling key (the same text every call); -1: a fresh one per call

    def __post_init__(self):
        require(self.max_new_tokens >= 0, f"sample.max_new_tokens must be >= 0, got {self.max_new_tokens}")
        require(self.temperature >= 0, f"sample.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        require(self.top_k >= 0, f"sample.top_k must be >= 0 (0 = off), got {self.top_k}")
        require(self.repetition_penalty > 0, f"sample.repetition_penalty must be > 0, got {self.repetition_penalty}")
        require(0 < self.top_p <= 1, f"sample.top_p must be in (0, 1], got {self.top_p}")
        require(self.seed >= -1, f"sample.seed must be >= 0 (fixed) or -1 (fresh each call), got {self.seed}")

    @classmethod
    def from_config(cls, s) -> "SampleSettings":
        return read_section(cls, s)
