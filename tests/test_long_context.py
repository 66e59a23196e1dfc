"""Evaluation at a longer window than training (`eval.seq_len`), and a synthetic task trained and
evaluated end to end."""

import json
import os

import numpy as np
import optax
import pytest
from flax import nnx

from muse_jax.modes.evaluate import evaluate_checkpoint, evaluate_variants
from muse_jax.modes.train import train
from muse_jax.settings import Settings
from muse_jax.train.run import Run


@pytest.mark.parametrize("kind", ["bk", "transformer"])
def test_a_longer_window_sees_the_same_targets_and_equals_one_long_forward(tiny_config, kind):
    """At 4 × train.seq_len the validation set is the same targets in longer windows, and its
    loss (overall and by position) is that of the model run over each long window at once."""
    tiny_config.model.kind = kind
    tiny_config.train.eval_batches = 3
    run = Run(Settings.from_config(tiny_config))
    run.restore_latest()  # no checkpoint: the initial state
    params = run.eval_params(run.state)
    seq_len, long = tiny_config.train.seq_len, 4 * tiny_config.train.seq_len
    short = run.validation(params, position_buckets=4)
    result = run.validation(params, seq_len=long, position_buckets=8)
    assert sum(short["by_position"]["targets"]) == sum(result["by_position"]["targets"]) == 3 * 4 * seq_len
    assert result["by_position"]["targets"] == [3 * long // 8] * 8

    tokens = run.val_tokens  # 3 windows of 4 × seq_len: all of the validation targets
    windows = np.stack([tokens[j * long:j * long + long + 1] for j in range(3)])
    model = nnx.merge(run.setup.graphdef, params)
    nll = np.asarray(optax.softmax_cross_entropy_with_integer_labels(model(windows[:, :-1]), windows[:, 1:]),
                     np.float64)
    np.testing.assert_allclose(result["val_loss"], nll.mean(), rtol=1e-6)
    per_bucket = nll.reshape(3, 8, long // 8).mean(axis=(0, 2))
    np.testing.assert_allclose(result["by_position"]["loss"], per_bucket, rtol=1e-5)
    assert "val_accuracy" not in result


def test_synthetic_task_trains_resumes_and_evaluates_longer(tiny_config, capsys):
    """MQAR end to end: the eval rows carry the answers' accuracy, the data position is
    checkpointed, and --mode=eval at 2 × train.seq_len reports accuracy by position."""
    c = tiny_config
    c.data.synthetic = "mqar"
    c.data.mqar.num_pairs = 4
    c.data.mqar.vocab_size = 24
    c.train.steps = 4
    c.train.checkpoint_every = 2
    train(Settings.from_config(c), "unused")
    out = capsys.readouterr().out
    assert "synthetic mqar (4 pairs, vocab 24)" in out and "val_accuracy" in out and "sample:" not in out
    with open(os.path.join(c.workdir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [4] and 0 <= evals[0]["val_accuracy"] <= 1

    c.eval.seq_len = 64
    c.eval.position_buckets = 8
    result = evaluate_checkpoint(Settings.from_config(c))
    assert result["step"] == 4 and result["seq_len"] == 64 and result["train_seq_len"] == 32
    by = result["by_position"]
    assert sum(by["targets"]) == 2 * 4 * 4  # eval_batches × batch_size sequences, 4 answers each
    assert by["targets"][0] == 0 and by["loss"][0] is None  # the pairs fill positions 0..7: no answer
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["val_accuracy"] == result["val_accuracy"]
    fewer = c.copy_and_resolve_references()
    fewer.data.mqar.num_pairs = 2
    same, two_pairs = evaluate_variants([Settings.from_config(c), Settings.from_config(fewer)])
    assert same["val_loss"] == result["val_loss"] and sum(two_pairs["by_position"]["targets"]) == 2 * 4 * 2
    fewer.model.d_model = 16
    with pytest.raises(ValueError, match="may differ only in eval"):
        evaluate_variants([Settings.from_config(c), Settings.from_config(fewer)])
    resumed = Run(Settings.from_config(c))
    assert resumed.restore_latest() and resumed.data_state == {"batch": 4}  # the next batch to train on
