"""`--mode=generate`, and the sampler that generation, chat and the end-of-training sample share.

A sampler restores only what sampling needs from the latest checkpoint — the parameters (or their
EMA with `train.eval_use_ema`), not the optimizer state — and finds the tokenizer in the prepared
data (preparing it only if it is missing). The key: `sample.seed` ≥ 0 fixes it (the same text on
every call); −1 draws a fresh one each call, printed so that a sample can be repeated.
"""

import secrets
import sys

import jax

from muse_jax.data.prepared import PreparedData
from muse_jax.data.tokenizer import load_tokenizer
from muse_jax.settings import Settings
from muse_jax.train.checkpoint import Checkpointer
from muse_jax.train.run import checkpoints_dir, check_before_work, no_checkpoint, prepared_once, require_checkpoint
from muse_jax.train.state import ModelSetup


def sampling_key(settings: Settings) -> jax.Array:
    """PRNGKey(sample.seed), or of a fresh seed (reported on stderr) when sample.seed is −1."""
    seed = settings.sample.seed
    if seed < 0:
        seed = secrets.randbelow(2**31)
        print(f"sampling with --config.sample.seed={seed} (set it to repeat this sample)", file=sys.stderr)
    return jax.random.PRNGKey(seed)


class Sampler:
    """A model's parameters, its tokenizer and its Generator: prompt text → continuation."""

    def __init__(self, setup: ModelSetup, params, data: PreparedData, settings: Settings):
        self.setup, self.params, self.data = setup, params, data
        self.sp = load_tokenizer(data.tokenizer_path)
        self.generator = setup.generator(settings.sample, data.eos_id)
        self.key = sampling_key(settings)

    def encode(self, text: str) -> list[int]:
        """The token ids the model sees for a prompt (`PreparedData.prompt_ids`)."""
        return self.data.prompt_ids(self.sp, text)

    def complete(self, prompt: str, call: int = 0) -> str:
        """The prompt and its continuation; `call` numbers the samples drawn from one key."""
        out = self.generator.generate(self.params, [self.encode(prompt)], jax.random.fold_in(self.key, call))
        return prompt + self.sp.decode(out[0])


def restored_sampler(settings: Settings) -> Sampler:
    """The sampler of the latest checkpoint of `settings.workdir` (no optimizer, no train state)."""
    require_checkpoint(settings)
    check_before_work(settings)
    data = prepared_once(settings.data)
    setup = ModelSetup(settings, data.vocab_size)
    part = "ema_params" if settings.train.eval_use_ema else "params"
    checkpointer = Checkpointer(checkpoints_dir(settings), settings.train.keep_checkpoints)
    found = checkpointer.restore_latest_params({part: setup.abstract_params()})
    checkpointer.close()
    if found is None:
        raise no_checkpoint(settings)
    params = found[1][part]
    return Sampler(setup, params, data, settings)


def generate_from_checkpoint(settings: Settings, prompt: str) -> str:
    text = restored_sampler(settings).complete(prompt)
    print(text)
    return text
