"""Tiny Japanese ResNet-BK: the demo configuration (≤ 10 minutes on 2 CPU cores).

Trains on the demo corpus bundled in `muse_jax/data/demo_corpus/`. Every key below is
read by exactly one place in the code; the config is locked, so an unknown key is an error.
"""

import ml_collections

from muse_jax.data.demo import DEMO_SOURCES


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = "workdirs/tiny_ja"
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.kind = "bk"  # bk | transformer
    c.model.d_model = 128
    c.model.n_layers = 4
    c.model.ffn_mult = 3  # hidden width of the gated MLP = ffn_mult * d_model
    c.model.n_heads = 4  # transformer only
    c.model.bk = ml_collections.ConfigDict()
    c.model.bk.channels = 64  # C resolvent channels per layer
    c.model.bk.lap_eta = 0.05  # Im z_c = lap_eta + softplus(rho_c) >= lap_eta
    c.model.bk.scan_impl = "sequential"  # associative | sequential (sequential: faster to compile and run on CPU)

    c.data = ml_collections.ConfigDict()
    c.data.sources = DEMO_SOURCES
    c.data.vocab_size = 4096
    c.data.val_fraction = 0.05
    c.data.cache_dir = ""  # "" = <workdir>/data

    c.train = ml_collections.ConfigDict()
    c.train.steps = 600
    c.train.batch_size = 16
    c.train.seq_len = 128
    c.train.log_every = 25
    c.train.eval_every = 200
    c.train.eval_batches = 8
    c.train.checkpoint_every = 200
    c.train.keep_checkpoints = 2

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 50
    c.optim.min_lr_ratio = 0.1  # cosine decays to lr * min_lr_ratio at train.steps
    c.optim.b1 = 0.9
    c.optim.b2 = 0.95
    c.optim.weight_decay = 0.1
    c.optim.grad_clip = 1.0

    c.sample = ml_collections.ConfigDict()
    c.sample.max_new_tokens = 48
    c.sample.temperature = 0.8
    c.sample.top_k = 40
    c.sample.top_p = 0.95
    return c
