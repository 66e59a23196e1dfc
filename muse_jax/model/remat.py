"""Rematerialisation of the scanned layer: which activations the backward pass keeps.

  none     keep everything XLA wants (fastest, most memory)
  full     keep only each layer's input (the scan carry); recompute the layer in the backward pass
  minimal  also keep the named sublayer outputs (`SAVED_NAMES`: the mixer's and the FFN's
           projections back to d_model), recompute the rest
  offload  like minimal, but the named outputs are moved to pinned host memory during the
           forward pass and brought back for the backward pass (`save_and_offload_only_these_names`)
The names are attached with `checkpoint_name` inside the block (`muse_jax/model/lm.py`).
"""

from typing import Callable

import jax
from jax.ad_checkpoint import checkpoint_name

from muse_jax.settings.train import REMAT_POLICIES

SAVED_NAMES = ("mixer_out", "ffn_out")


def name_activation(x: jax.Array, name: str) -> jax.Array:
    if name not in SAVED_NAMES:
        raise ValueError(f"unknown activation name {name!r}; known: {SAVED_NAMES}")
    return checkpoint_name(x, name)


def remat_layer(layer: Callable, policy: str) -> Callable:
    """`layer` wrapped in `jax.checkpoint` with the named policy (see the module docstring)."""
    if policy not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {policy!r}; known: {REMAT_POLICIES}")
    policies = jax.checkpoint_policies
    if policy == "none":
        return layer
    if policy == "full":
        chosen = policies.nothing_saveable
    elif policy == "minimal":
        chosen = policies.save_only_these_names(*SAVED_NAMES)
    else:
        chosen = policies.save_and_offload_only_these_names(
            names_which_can_be_saved=[], names_which_can_be_offloaded=list(SAVED_NAMES),
            offload_src="device", offload_dst="pinned_host",
        )
    return jax.checkpoint(layer, policy=chosen, prevent_cse=False)
