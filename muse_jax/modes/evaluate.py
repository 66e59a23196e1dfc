"""`--mode=eval`: the loss of the latest checkpoint, on the validation split or on a text file."""

import json
import sys

import jax

from muse_jax.data.tokenizer import load_tokenizer
from muse_jax.settings import Settings
from muse_jax.train.run import restored_run


def evaluate_checkpoint(settings: Settings, eval_file: str | None = None) -> dict:
    """Loss of the latest checkpoint on the validation split, or on every window of `eval_file`
    (a UTF-8 text, one document: `PreparedData.text_file_ids`; a text shorter than one window
    of train.seq_len + 1 tokens is scored as one shorter window); printed as one JSON line."""
    run = restored_run(settings)
    if eval_file is None:
        result = run.validation(run.eval_params(run.state))
    else:
        tokens = run.data.text_file_ids(load_tokenizer(run.data.tokenizer_path), eval_file)
        seq_len = min(settings.train.seq_len, len(tokens) - 1)  # a text shorter than one window: one shorter window
        if seq_len < settings.train.seq_len and jax.process_index() == 0:
            print(f"{eval_file}: {len(tokens)} tokens, fewer than one window of train.seq_len + 1 = "
                  f"{settings.train.window}: scored as one window of {len(tokens)}", file=sys.stderr)
        result = {"eval_file": eval_file, "seq_len": seq_len, "targets": (len(tokens) - 1) // seq_len * seq_len,
                  **run.validation(run.eval_params(run.state), tokens, seq_len)}
    result = {"step": int(run.state.step), **result}
    if jax.process_index() == 0:
        print(json.dumps(result, ensure_ascii=False))
    return result
