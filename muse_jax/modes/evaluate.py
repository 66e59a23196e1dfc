"""`--mode=eval`: the loss of the latest checkpoint, on the validation set or on a text file, in
windows of `eval.seq_len` (longer than train.seq_len: length extrapolation), resolved by position."""

import dataclasses
import json
import sys

import jax

from muse_jax.data.synthetic import SyntheticTask
from muse_jax.data.tokenizer import load_tokenizer
from muse_jax.settings import Settings
from muse_jax.train.run import restored_run


def evaluate_checkpoint(settings: Settings, eval_file: str | None = None) -> dict:
    """Loss of the latest checkpoint on the validation set (`Run.validation`: the same targets at
    any `eval.seq_len`), or on every window of `eval_file` (a UTF-8 text, one document:
    `PreparedData.text_file_ids`; a text shorter than one window of eval.seq_len + 1 tokens is
    scored as one shorter window); with a synthetic task also the answers' accuracy;
    `by_position`: the same in `eval.position_buckets` buckets of the window. Printed as one JSON line."""
    if eval_file is None:
        result = evaluate_variants([settings])[0]
    else:
        run = restored_run(settings)
        seq_len = settings.eval.seq_len
        tokens = run.data.text_file_ids(load_tokenizer(run.data.tokenizer_path), eval_file)
        if len(tokens) < seq_len + 1:  # a text shorter than one window: one shorter window
            seq_len = len(tokens) - 1
            if jax.process_index() == 0:
                print(f"{eval_file}: {len(tokens)} tokens, fewer than one window of eval.seq_len + 1 = "
                      f"{settings.eval.seq_len + 1}: scored as one window of {len(tokens)}", file=sys.stderr)
        result = {"step": int(run.state.step), "seq_len": seq_len, "train_seq_len": settings.train.seq_len,
                  "eval_file": eval_file, "targets": (len(tokens) - 1) // seq_len * seq_len,
                  **run.validation(run.eval_params(run.state), tokens, seq_len, settings.eval.position_buckets)}
    if jax.process_index() == 0:
        print(json.dumps(result, ensure_ascii=False))
    return result


def evaluate_variants(variants: list[Settings]) -> list[dict]:
    """`--mode=eval` (on the validation set) of one checkpoint at several points, restored once:
    settings that differ only in `eval.*` and, for a synthetic task, its keys (`data.mqar.*`,
    `data.passkey.*`: e.g. more pairs, another depth). Each window length compiles once."""
    first = variants[0]
    task_keys = {"mqar": first.data.synthetic.mqar, "passkey": first.data.synthetic.passkey}
    for v in variants:
        data = dataclasses.replace(v.data, synthetic=dataclasses.replace(v.data.synthetic, **task_keys))
        if dataclasses.replace(v, eval=first.eval, data=data) != first:
            raise ValueError("evaluate_variants: the settings may differ only in eval.* and data.mqar/passkey.*")
    run = restored_run(first)
    params = run.eval_params(run.state)
    results = []
    for v in variants:
        task = SyntheticTask(v.data.synthetic) if v.data.synthetic.enabled else None
        results.append({"step": int(run.state.step), "seq_len": v.eval.seq_len, "train_seq_len": v.train.seq_len,
                        **run.validation(params, seq_len=v.eval.seq_len, position_buckets=v.eval.position_buckets,
                                         task=task)})
    return results
