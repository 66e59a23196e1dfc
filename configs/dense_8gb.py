"""The largest uncompressed ResNet-BK whose training step the dry run says fits one 8 GB GPU.

Uncompressed: a dense embedding table and dense block linears (no tensor-train embedding, no
low-rank, no ternary weights). Float32 master weights with bfloat16 compute, AdamW, params and
optimizer state in pinned host memory between steps (`train.offload_*`), full rematerialisation
of the scanned layers, micro-batches of one sequence of 512 tokens.

    python -m muse_jax.main --config configs/dense_8gb.py --mode=dry_run --config.workdir=results/dry_run_dense_8gb

Result (results/dry_run_dense_8gb/dry_run.json, CPU compile): 312.0 M stored parameters,
device peak 7.63 GiB of 8.

How it was found: `python -m experiments.dense_8gb_search` compiles the step of this config
for a grid of widths × depths (vocab 32768) and records each device peak in
results/dense_8gb_search.json; this is the largest stored parameter count that fits (2560 × 3,
341.5 M, needs 8.03 GiB). 1024 × 20 is a deeper shape of about the same size (311.5 M, 7.78 GiB).

The update phase sets the limit at ≈ 26 bytes per parameter (6.6 × the float32 params): params,
gradients, AdamW's two moments and the temporaries of the update. Offload brings the state to
the device for the update, so it does not lower that phase; it lowers the forward/backward
phase (the optimizer state stays on the host meanwhile), which is what lets the batch grow.
"""

import ml_collections

from configs import tiny_ja


def get_config() -> ml_collections.ConfigDict:
    c = tiny_ja.get_config()
    c.workdir = "workdirs/dense_8gb"

    c.model.kind = "bk"
    c.model.d_model = 1792
    c.model.n_layers = 6
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
    c.train.compute_dtype = "bfloat16"  # not auto: the dry run on a CPU measures the GPU plan in bfloat16
    c.train.loss_chunk_tokens = 2048  # head + loss by slices of 2048 tokens: a larger micro-batch never holds whole logits
    c.optim.warmup_steps = 0
    return c
