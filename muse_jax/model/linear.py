"""The linear layers inside the blocks: dense or low-rank, with optional ternary weights.

`LinearSpec` (from `model.low_rank` and `model.ternary`) builds every projection of the mixers
and FFNs, so one switch compresses the whole stack. Kernels are decayed weight matrices
(`param_roles.weight_matrix`).

A kernel whose input dimension grows with `model.d_model` (a hidden matrix, in μP's terms)
carries the metadata `lr_group="hidden"` (`param_roles.py`); one of fixed fan-in (the BK read-out of 2C resolvent
features, the second factor of a low-rank pair) carries none. The width-aware learning rate
(`muse_jax/optim/width_scaling.py`) scales the former only.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from muse_jax.model.low_rank import low_rank_saves_parameters
from muse_jax.model.param_roles import weight_matrix
from muse_jax.model.ternary import ternary_ste
from muse_jax.settings import ModelSettings


class DenseLinear(nnx.Module):
    """y = x W (+ b); with `ternary`, the forward pass uses absmean-ternary W (straight-through)."""

    def __init__(self, d_in: int, d_out: int, *, use_bias: bool = False, bias_value: float = 0.0,
                 ternary: bool = False, width_fan_in: bool = True, rngs: nnx.Rngs):
        self.ternary = ternary
        kernel = nnx.initializers.lecun_normal()(rngs.params(), (d_in, d_out), jnp.float32)
        self.kernel = weight_matrix(kernel, lr_group="hidden" if width_fan_in else None)
        self.bias = nnx.Param(jnp.full((d_out,), bias_value, jnp.float32)) if use_bias else None

    def weight(self) -> jax.Array:
        w = self.kernel[...]
        return ternary_ste(w) if self.ternary else w

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x @ self.weight().astype(x.dtype)
        return y if self.bias is None else y + self.bias[...].astype(x.dtype)


class LowRankLinear(nnx.Module):
    """y = (x L) R (+ b): two DenseLinear factors, rank r (see `low_rank.py`)."""

    def __init__(self, d_in: int, d_out: int, rank: int, *, use_bias: bool = False, bias_value: float = 0.0,
                 ternary: bool = False, width_fan_in: bool = True, rngs: nnx.Rngs):
        self.factor_in = DenseLinear(d_in, rank, ternary=ternary, width_fan_in=width_fan_in, rngs=rngs)
        self.factor_out = DenseLinear(rank, d_out, use_bias=use_bias, bias_value=bias_value, ternary=ternary,
                                      width_fan_in=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.factor_out(self.factor_in(x))


@dataclasses.dataclass(frozen=True)
class LinearSpec:
    """How every block projection is built: `rank` 0 = dense; `ternary` = BitNet b1.58 weights."""

    rank: int = 0
    ternary: bool = False

    @classmethod
    def of(cls, model: ModelSettings) -> "LinearSpec":
        return cls(rank=model.low_rank, ternary=model.ternary)

    def make(self, d_in: int, d_out: int, *, use_bias: bool = False, bias_value: float = 0.0,
             width_fan_in: bool = True, rngs: nnx.Rngs) -> nnx.Module:
        """Low-rank where that saves parameters, else dense. `width_fan_in`: d_in grows with
        the model width (see the module docstring)."""
        kwargs = dict(use_bias=use_bias, bias_value=bias_value, ternary=self.ternary, width_fan_in=width_fan_in,
                      rngs=rngs)
        if low_rank_saves_parameters(d_in, d_out, self.rank):
            return LowRankLinear(d_in, d_out, self.rank, **kwargs)
        return DenseLinear(d_in, d_out, **kwargs)
