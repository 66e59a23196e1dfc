"""The largest uncompressed ResNet-BK whose training step the dry run says fits one 8 GB GPU.

Uncompressed: a dense embedding table and dense block linears (no tensor-train embedding, no
low-rank, no ternary weights). Float32 master weights with bfloat16 compute, AdamW, params and
optimizer state in pinned host memory between steps (`train.offload_*`), full rematerialisation
of the scanned layers, micro-batches of one sequence of 512 tokens.

    python -m muse_jax.main --config configs/dense_8gb.py --mode=dry_run --config.workdir=results/dry_run_dense_8gb

Result (results/dry_run_dense_8gb/dry_run.json, CPU compile): 287.3 M stored parameters,
device peak 7.81 GiB of 8.

How it was found: device peaks of the step for widths × depths (vocab 32768, this config
otherwise), from `compiled_memory` in `muse_jax/train/dry_run.py`:

    d_model × n_layers   stored params   device peak GiB   forward/backward   update
    2560 × 2             255.6 M         6.98              3.64               6.98
    1536 × 7             267.8 M         7.42              3.19               7.42
    1024 × 18            283.7 M         7.80              3.11               7.80
    2048 × 4             287.3 M         7.81              3.64               7.81   ← this config
    1536 × 8             298.9 M         8.26              3.48               8.26
    1024 × 19            297.6 M         8.18              3.24               8.18
    2560 × 3             341.5 M         9.29              4.45               9.29
    2048 × 5             342.4 M         9.49              4.16               9.49

The update phase sets the limit at ≈ 29.6 bytes per parameter (7.4 × the float32 params):
params, gradients, AdamW's two moments, and the new optimizer state beside the old one (the step
guard's `lax.cond` keeps both until it has chosen). Offload brings the state to the device for
the update, so it does not lower that phase; it lowers the forward/backward phase (the optimizer
state stays on the host meanwhile), which is what lets the batch grow: the largest batch that
fits is 256 with offload, 128 without (same command with `--config.train.offload_params=False
--config.train.offload_optimizer=False`: same 7.81 GiB peak). 1024 × 18 is a deeper shape of
about the same size (283.7 M).
"""

import ml_collections

from configs import tiny_ja


def get_config() -> ml_collections.ConfigDict:
    c = tiny_ja.get_config()
    c.workdir = "workdirs/dense_8gb"

    c.model.kind = "bk"
    c.model.d_model = 2048
    c.model.n_layers = 4
    c.model.n_heads = 16  # used by the transformer baseline only
    c.model.ffn_mult = 4
    c.model.bk.channels = 64

    c.data.vocab_size = 32768
    c.train.seq_len = 512
    c.train.batch_size = 16
    c.train.grad_accum_steps = 16
    c.train.remat_policy = "full"
    c.train.offload_params = True
    c.train.offload_optimizer = True
    c.train.param_dtype = "float32"
    c.train.compute_dtype = "bfloat16"
    c.optim.warmup_steps = 0
    return c
