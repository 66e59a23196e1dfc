"""The ablation study's base model (`experiments/ablation.py`): configs/tiny_ja.py narrowed so
that 8 variants × 5 seeds finish in about an hour on 2 CPU cores.

ResNet-BK, d_model 64, 3 layers, 48 resolvent channels (4·d·C + d² = 4·d², so the BK mixer has
the parameters of an attention layer and the Transformer baseline matches within 0.2 %),
LAP off (`model.bk.lap_eta = 0`): the `none` variant; each variant switches components on
with `--config.` overrides (the sweep records the exact command of every run). One evaluation,
at the end, on the first 14,336 of the demo corpus' 15,285 validation tokens (7 batches).
"""

import ml_collections

from configs import tiny_ja


def get_config() -> ml_collections.ConfigDict:
    c = tiny_ja.get_config()
    c.workdir = "workdirs/ablation_ja"
    c.model.d_model = 64
    c.model.n_layers = 3
    c.model.n_heads = 4  # transformer baseline: head dim 16
    c.model.bk.channels = 48
    c.model.bk.lap_eta = 0.0  # the `none` variant: Im z free
    c.train.steps = 196  # ≈ 400k tokens at 16 × 128 per step
    c.train.eval_every = 196  # one validation, at the end
    c.train.eval_batches = 7  # 7 × 16 × 128 = 14,336 of the demo validation split's 15,285 tokens
    c.train.checkpoint_every = 100
    c.train.keep_checkpoints = 1
    c.train.log_every = 50
    c.sample.max_new_tokens = 16
    return c
