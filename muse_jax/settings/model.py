"""`model.*`: the architecture (docs/architecture.md), read and checked once."""

import dataclasses

from muse_jax.settings.core import one_of, read_section, require

MODEL_KINDS = ("bk", "transformer")
ATTENTION_IMPLS = ("auto", "xla", "cudnn")  # chosen per backend and dtype by model/attention.py
EMBEDDINGS = ("euclidean", "hyperbolic", "htt", "hyperbolic_htt")
ROUTERS = ("none", "scattering", "learned")
SCAN_IMPLS = ("auto", "chunked", "sequential", "associative", "pallas")


@dataclasses.dataclass(frozen=True)
class BKSettings:
    """`model.bk.*`: the BK mixer."""

    channels: int = 64
    lap_eta: float = 0.05
    prime_bump: bool = False
    semiseparable: bool = False
    scan_impl: str = "auto"

    @classmethod
    def from_config(cls, bk) -> "BKSettings":
        s = read_section(cls, bk)
        require(s.channels >= 1, f"model.bk.channels must be >= 1, got {s.channels}")
        one_of("model.bk.scan_impl", s.scan_impl, SCAN_IMPLS)
        return s

    @property
    def lap(self) -> bool:
        """LAP on: Im z ≥ lap_eta > 0."""
        return self.lap_eta > 0


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """`model.*`; see configs/tiny_ja.py for each key's meaning."""

    kind: str = "bk"
    d_model: int = 128
    n_layers: int = 4
    ffn_mult: int = 3
    n_heads: int = 4
    attention_impl: str = "auto"
    output_mult: float = 4.0
    embedding: str = "euclidean"
    hyperbolic_c_min: float = 0.1
    htt_rank: int = 16
    low_rank: int = 0
    ternary: bool = False
    router: str = "none"
    n_experts: int = 4
    router_top_k: int = 1
    router_balance_weight: float = 0.01
    bk: BKSettings = BKSettings()

    @classmethod
    def from_config(cls, m) -> "ModelSettings":
        s = read_section(cls, m, bk=BKSettings.from_config(m.bk))
        s.check()
        return s

    def check(self) -> None:
        one_of("model.kind", self.kind, MODEL_KINDS)
        one_of("model.embedding", self.embedding, EMBEDDINGS)
        one_of("model.router", self.router, ROUTERS)
        one_of("model.attention_impl", self.attention_impl, ATTENTION_IMPLS)
        for key in ("d_model", "n_layers", "ffn_mult", "n_heads", "htt_rank", "n_experts"):
            require(getattr(self, key) >= 1, f"model.{key} must be >= 1, got {getattr(self, key)}")
        require(self.output_mult > 0, f"model.output_mult must be > 0, got {self.output_mult}")
        require(self.hyperbolic_c_min > 0, f"model.hyperbolic_c_min must be > 0, got {self.hyperbolic_c_min}")
        require(self.low_rank >= 0, f"model.low_rank must be >= 0 (0 = dense), got {self.low_rank}")
        require(self.kind != "transformer" or self.d_model % self.n_heads == 0,
                f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}")
        require(self.router != "scattering" or self.kind == "bk",
                "model.router=scattering routes by the BK resolvent phase: it needs model.kind=bk")
        require(self.router != "learned" or 1 <= self.router_top_k <= self.n_experts,
                f"model.router_top_k must be in [1, n_experts={self.n_experts}], got {self.router_top_k}")

    @property
    def is_bk(self) -> bool:
        return self.kind == "bk"

    @property
    def ffn_width(self) -> int:
        return self.ffn_mult * self.d_model
