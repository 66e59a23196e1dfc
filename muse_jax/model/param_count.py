"""Honest parameter counts: what is stored, and what an uncompressed model of the same shape has.

  stored            every parameter array the model holds (what checkpoints and the optimizer see)
  dense_equivalent  the same model with each low-rank layer (L: d_in×r, R: r×d_out) replaced by a
                    dense d_in×d_out kernel and each tensor-train table by a dense V×D table;
                    experts, width and depth unchanged
  ternary           how many stored parameters the forward pass sees as {-s, 0, +s}
                    (`model.ternary`; 1.58 bits each at inference, float32 while training)
Counted from the structure of an abstract model (`nnx.eval_shape`): no memory, no compute.
"""

import math

from flax import nnx

from muse_jax.model.embedding import TTTable
from muse_jax.model.linear import DenseLinear, LowRankLinear
from muse_jax.model.lm import LanguageModel, count_params
from muse_jax.settings import ModelSettings


def _dense_replacement(node) -> tuple[int, int]:
    """(stored, dense-equivalent) parameter counts of a compressed node's compressed arrays."""
    if isinstance(node, LowRankLinear):
        left, right = node.factor_in.kernel, node.factor_out.kernel  # [..., d_in, r], [..., r, d_out]
        stacked = math.prod(left.shape[:-2])  # layers (and experts) stacked in front
        return left.size + right.size, stacked * left.shape[-2] * right.shape[-1]
    if isinstance(node, TTTable):
        return count_params(nnx.state(node, nnx.Param)), node.vocab_size * node.d_model
    return 0, 0


def parameter_counts(model_settings: ModelSettings, vocab_size: int) -> dict[str, int]:
    """{"stored", "dense_equivalent", "ternary"} (see the module docstring)."""
    model = nnx.eval_shape(lambda: LanguageModel(model_settings, vocab_size, rngs=nnx.Rngs(0)))
    stored = count_params(nnx.state(model, nnx.Param))
    dense, ternary = stored, 0
    for _, node in nnx.iter_graph(model):
        compressed, replacement = _dense_replacement(node)
        dense += replacement - compressed
        if isinstance(node, DenseLinear) and node.ternary:
            ternary += node.kernel.size
    return {"stored": stored, "dense_equivalent": dense, "ternary": ternary}


def describe_parameter_counts(counts: dict[str, int]) -> str:
    """'1,234 parameters stored (dense-equivalent 5,678; 1,000 ternary)'."""
    text = f"{counts['stored']:,} parameters stored (dense-equivalent {counts['dense_equivalent']:,}"
    return text + (f"; {counts['ternary']:,} ternary)" if counts["ternary"] else ")")
