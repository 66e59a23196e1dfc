"""The long-context study's base model (`experiments/long_context.py`, docs/long_context.md):
configs/tiny_ja.py narrowed to d_model 64, 2 layers, 48 resolvent channels (4·d·C + d² = 4·d²:
the BK mixer has the parameters of an attention layer, so ResNet-BK and the Transformer baseline
match within 0.2 %), windows of 64 tokens. The study sets the task (data.synthetic and its keys, or
the demo corpus), the width (d_model 128 with 96 channels) and the run length with overrides.
"""

import ml_collections

from configs import tiny_ja


def get_config() -> ml_collections.ConfigDict:
    c = tiny_ja.get_config()
    c.workdir = "workdirs/long_context_ja"
    c.model.d_model = 64
    c.model.n_layers = 2  # the fewest that can form an induction head
    c.model.n_heads = 4  # transformer: head dim 16
    c.model.bk.channels = 48
    c.data.mqar.num_pairs = 4
    c.data.mqar.vocab_size = 32  # 15 keys, 15 values: small enough to be learned on a CPU budget
    c.data.passkey.digits = 5
    c.data.passkey.vocab_size = 64
    c.train.steps = 600
    c.train.batch_size = 32
    c.train.seq_len = 64
    c.train.eval_every = 600  # one validation, at the end
    c.train.eval_batches = 4  # synthetic: 128 held-out sequences
    c.train.checkpoint_every = 600
    c.train.keep_checkpoints = 1
    c.train.log_every = 100
    c.sample.max_new_tokens = 16
    return c
