"""The learning-efficiency benchmark's models (`experiments/learning_efficiency.py`): the demo
model of configs/tiny_ja.py (d_model 128, 4 layers) with 96 resolvent channels, so that
ResNet-BK (1,378,944 parameters at vocab 4096) and the Transformer baseline (1,377,408) match
within 0.2 %. The benchmark sets train.steps and train.eval_every from its --max-tokens and
--eval-tokens; the values here are those of its default run (2M tokens, every ~100k).
"""

import ml_collections

from configs import tiny_ja


def get_config() -> ml_collections.ConfigDict:
    c = tiny_ja.get_config()
    c.workdir = "workdirs/efficiency_ja"
    c.model.bk.channels = 96
    c.train.steps = 977  # ceil(2,000,000 / (16 × 128))
    c.train.eval_every = 49  # 49 × 2048 = 100,352 tokens
    c.train.eval_batches = 7  # all the whole batches of the demo validation split: 14,336 of its 15,284 targets
    c.train.checkpoint_every = 49
    c.train.keep_checkpoints = 1
    c.train.log_every = 49
    c.sample.max_new_tokens = 16
    return c
