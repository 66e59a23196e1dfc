"""Synthetic recall tasks (muse_jax/data/synthetic.py): determinism, answers checked by brute force,
settings, and the loss / accuracy counting only the answer positions."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs.tiny_ja import get_config
from test_model import set_model_keys

from muse_jax.data.errors import DataError
from muse_jax.data.synthetic import SyntheticTask
from muse_jax.model.lm import LanguageModel
from muse_jax.settings import BKSettings, ConfigError, ModelSettings, Settings, SyntheticSettings
from muse_jax.settings.synthetic import MQARSettings, PasskeySettings
from muse_jax.train.loss import smoothed_cross_entropy
from muse_jax.train.step import evaluate, make_eval_step

MQAR = SyntheticSettings(task="mqar", mqar=MQARSettings(num_pairs=5, vocab_size=32))
PASSKEY = SyntheticSettings(task="passkey", passkey=PasskeySettings(digits=4, depth=-1.0, vocab_size=40))


def windows(batch: dict) -> np.ndarray:
    return np.concatenate([batch["inputs"], batch["targets"][:, -1:]], axis=1)


@pytest.mark.parametrize("settings", [MQAR, PASSKEY], ids=["mqar", "passkey"])
def test_batches_are_a_function_of_seed_and_index_and_resume(settings):
    task = SyntheticTask(settings)
    a, b = task.train_batches(40, 6, seed=3), task.train_batches(40, 6, seed=3)
    first = [next(a) for _ in range(3)]
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(first, [next(b) for _ in range(3)]) for k in x)
    other = next(task.train_batches(40, 6, seed=4))
    assert not np.array_equal(other["inputs"], first[0]["inputs"])  # another seed: other data
    resumed = task.train_batches(40, 6, seed=3)
    resumed.set_state(a.get_state())
    assert np.array_equal(next(resumed)["inputs"], next(a)["inputs"])
    with pytest.raises(DataError, match="not written by the synthetic task"):
        resumed.set_state({"document": 0, "position": 1})
    # held out: the same set whatever the run seed, none of it a training sequence
    held_out = task.eval_batches(40, 6, 2)
    assert np.array_equal(held_out[1]["inputs"], task.eval_batches(40, 6, 2)[1]["inputs"])
    train_rows = {r.tobytes() for x in first for r in windows(x)}
    assert not any(r.tobytes() in train_rows for x in held_out for r in windows(x))
    assert all(x["inputs"].dtype == np.int32 and x["loss_mask"].dtype == np.float32 for x in first)


def test_mqar_answers_by_brute_force():
    task = SyntheticTask(MQAR)
    d, keys = MQAR.mqar.num_pairs, MQAR.mqar.num_keys
    for batch in task.eval_batches(64, 8, 3):
        for tokens, mask in zip(windows(batch), batch["loss_mask"]):
            context = tokens[:2 * d]
            pairs = dict(zip(context[0::2].tolist(), context[1::2].tolist()))
            assert len(pairs) == d and all(1 <= k <= keys < v <= 2 * keys for k, v in pairs.items())
            assert len(set(pairs.values())) == d
            expected = np.zeros(64)
            for n in range(2 * d, 64):  # every query key: the next token is its value, and it is an answer
                if tokens[n] in pairs and (n - 2 * d) % 2 == 0:
                    assert tokens[n + 1] == pairs[tokens[n]]
                    expected[n] = 1
            assert np.array_equal(mask, expected) and mask.sum() == d  # every key asked exactly once
            queried = sorted(tokens[2 * d:][np.flatnonzero(expected[2 * d:])].tolist())
            assert queried == sorted(pairs)
            blanks = np.ones(65, bool)
            blanks[:2 * d] = False
            blanks[np.flatnonzero(expected)] = blanks[np.flatnonzero(expected) + 1] = False
            assert not tokens[blanks].any()  # everything else in the query region is the blank 0


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0, -1.0])
def test_passkey_answers_by_brute_force(depth):
    settings = SyntheticSettings(task="passkey", passkey=PasskeySettings(digits=4, depth=depth, vocab_size=40))
    places = set()
    for batch in SyntheticTask(settings).eval_batches(50, 8, 2):
        for tokens, mask in zip(windows(batch), batch["loss_mask"]):
            (at,) = np.flatnonzero(tokens == 11)  # KEY, once
            (query,) = np.flatnonzero(tokens == 12)  # QUERY, once
            digits = tokens[at + 1:at + 5]
            assert query == 50 - 4 and np.all((1 <= digits) & (digits <= 10))
            assert np.array_equal(tokens[-4:], digits)
            assert np.array_equal(np.flatnonzero(mask), np.arange(46, 50))  # the last 4 targets only
            filler = np.delete(tokens[:query], np.arange(at, at + 5))
            assert len(filler) == 51 - 10 and filler.min() >= 13 and filler.max() < 40
            places.add(at)
    fill = 51 - 10
    if depth >= 0:
        assert places == {round(depth * fill)}
    else:
        assert len(places) > 5  # random depth


def synthetic_config(overrides: dict | None = None):
    """configs/tiny_ja.py with MQAR at 32 tokens and `overrides` ("a.b": value)."""
    c = get_config()
    c.data.synthetic = "mqar"
    c.train.seq_len = 32
    return set_model_keys(c, overrides or {})


def test_settings_check_the_task_against_both_lengths():
    s = Settings.from_config(synthetic_config())
    assert s.data.model_vocab_size == 128 and s.eval.seq_len == 32
    assert Settings.from_config(synthetic_config({"eval.seq_len": 256})).eval.seq_len == 256
    with pytest.raises(ConfigError, match=r"train.seq_len=16 is too short for data.mqar.num_pairs=8"):
        Settings.from_config(synthetic_config({"train.seq_len": 16, "eval.position_buckets": 4}))
    with pytest.raises(ConfigError, match=r"eval.seq_len=8 is too short"):
        Settings.from_config(synthetic_config({"eval.seq_len": 8, "eval.position_buckets": 4}))
    with pytest.raises(ConfigError, match=r"data.mqar.vocab_size=9 leaves 4 keys"):
        Settings.from_config(synthetic_config({"data.mqar.vocab_size": 9}))
    with pytest.raises(ConfigError, match="data.synthetic must be one of"):
        Settings.from_config(synthetic_config({"data.synthetic": "copy"}))
    with pytest.raises(ConfigError, match=r"data.passkey.depth must be in \[0, 1\] or -1"):
        Settings.from_config(synthetic_config({"data.synthetic": "passkey", "data.passkey.depth": 1.5}))
    with pytest.raises(ConfigError, match="eval.position_buckets must be in"):
        Settings.from_config(synthetic_config({"eval.position_buckets": 33}))


def test_loss_and_accuracy_count_only_the_answers():
    """Targets chosen so that the model is right everywhere except at the answers (accuracy 0),
    then wrong everywhere except there (accuracy 1); the loss is the mean NLL of the answers."""
    model = LanguageModel(ModelSettings(d_model=16, n_layers=1, bk=BKSettings(channels=4)), 20, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    params = nnx.to_pure_dict(params)
    inputs = jax.random.randint(jax.random.PRNGKey(1), (3, 12), 0, 20)
    logits = model(inputs)
    best = jnp.argmax(logits, -1)
    mask = jnp.zeros((3, 12)).at[:, 3].set(1.0).at[1, 7].set(1.0)
    step = make_eval_step(graphdef)
    for right_at_answers in (False, True):
        wrong = (best + 1) % 20
        targets = jnp.where((mask > 0) == right_at_answers, best, wrong)
        batch = {"inputs": inputs, "targets": targets, "loss_mask": mask}
        result = evaluate(lambda rows: step, params, [batch], position_buckets=4)
        assert result["val_accuracy"] == float(right_at_answers)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        expected = float(jnp.sum(nll * mask) / jnp.sum(mask))
        np.testing.assert_allclose(result["val_loss"], expected, rtol=1e-6)
        by = result["by_position"]
        assert by["bucket_start"] == [0, 3, 6, 9] and by["targets"] == [0, 3, 1, 0]
        assert by["loss"][0] is None and by["accuracy"][1] == float(right_at_answers)
        objective, plain = smoothed_cross_entropy(logits, targets, 0.0, mask)
        np.testing.assert_allclose([objective, plain], [expected, expected], rtol=1e-6)
    unmasked = evaluate(lambda rows: step, params, [{"inputs": inputs, "targets": best}])
    assert "val_accuracy" not in unmasked  # a text batch: loss only, as before
