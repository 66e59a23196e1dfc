"""The grain loader over prepared shards: packing, mixing, resume; evaluation batches.

Shards here are synthetic: every token value appears once per source, so a
window tells exactly which documents (and sources) it came from.
"""

import json
import os

import grain
import numpy as np
import pytest

from muse_jax.data.errors import DataError
from muse_jax.data.mixture import train_dataset, validation_tokens
from muse_jax.data.packing import eval_batches, window_batches
from muse_jax.data.prepare import META_FILE, PREPARED_FORMAT_VERSION, TOKENIZER_FILE
from muse_jax.data.prepared import load_prepared
from muse_jax.data.shards import ShardWriter

EOS = 3
SEQ, BATCH = 16, 4


def documents(first_value, count, length_range, rng):
    """``count`` documents of distinct values from ``first_value`` on, each ending in EOS."""
    docs, value = [], first_value
    for _ in range(count):
        n = int(rng.integers(*length_range))
        docs.append(np.append(np.arange(value, value + n), EOS).astype("<u2"))
        value += n
    return docs


def write_prepared(directory, sources, weights=None, shard_max_tokens=500):
    """A prepared folder holding ``sources``: {name: (train docs, val docs)}."""
    os.makedirs(directory, exist_ok=True)
    open(os.path.join(directory, TOKENIZER_FILE), "wb").close()
    entries = []
    for name, splits in sources.items():
        entry = {"name": name, "kind": "jsonl", "weight": 1.0}
        for split, docs in zip(("train", "val"), splits):
            writer = ShardWriter(os.path.join(directory, split), name, shard_max_tokens)
            for doc in docs:
                writer.write(doc)
            writer.close()
            entry[split] = {"documents": writer.documents, "tokens": writer.tokens, "shards": writer.files}
        entries.append(entry)
    meta = {"format_version": PREPARED_FORMAT_VERSION, "dtype": "uint16",
            "tokenizer": {"file": TOKENIZER_FILE, "vocab_size": 65536, "eos_id": EOS},
            "train_tokens": sum(e["train"]["tokens"] for e in entries),
            "val_tokens": sum(e["val"]["tokens"] for e in entries), "settings": {}, "sources": entries}
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f)
    return load_prepared(directory, weights)


@pytest.fixture
def two_sources(tmp_path):
    """Source a: 150 short documents (values 10..), b: 40 long ones (values 30000..)."""
    rng = np.random.default_rng(0)
    a = documents(10, 150, (5, 40), rng)
    b = documents(30000, 40, (60, 300), rng)
    return tmp_path / "prepared", {"a": (a, a[:3]), "b": (b, b[:2])}


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_same_batches(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
        np.testing.assert_array_equal(x["targets"], y["targets"])


def test_windows_pack_documents_back_to_back(tmp_path):
    docs = documents(10, 50, (1, 60), np.random.default_rng(1))  # some shorter than a window
    data = write_prepared(tmp_path / "p", {"only": (docs, docs[:1])})
    batches = take(iter(train_dataset(data, SEQ, BATCH, seed=0)), 40)
    windows = [w for b in batches for w in np.concatenate([b["inputs"], b["targets"][:, -1:]], axis=1)]
    for b in batches:
        assert b["inputs"].shape == b["targets"].shape == (BATCH, SEQ) and b["inputs"].dtype == np.int32
        np.testing.assert_array_equal(b["targets"][:, :-1], b["inputs"][:, 1:])
    for w, nxt in zip(windows, windows[1:]):
        assert w[-1] == nxt[0]  # window k+1 starts at window k's last token
    stream = np.concatenate([windows[0]] + [w[1:] for w in windows[1:]])
    ends = np.flatnonzero(stream == EOS)
    drawn = [tuple(stream[s + 1:e + 1]) for s, e in zip(np.r_[-1, ends[:-1]], ends)]
    first_epoch = drawn[:len(docs)]
    assert sorted(first_epoch) == sorted(tuple(d) for d in docs)  # each document once per epoch
    assert first_epoch != [tuple(d) for d in docs]  # shuffled
    assert drawn[len(docs):2 * len(docs)] != first_epoch  # reshuffled next epoch


@pytest.mark.parametrize("weights", [{"a": 0.7, "b": 0.3}, {"a": 1.0, "b": 1.0}])
def test_mixing_proportions_are_token_shares(two_sources, weights):
    directory, sources = two_sources
    data = write_prepared(directory, sources, weights)
    batches = take(iter(train_dataset(data, 64, 8, seed=3)), 150)  # ~77k tokens
    inputs = np.concatenate([b["inputs"].ravel() for b in batches])
    inputs = inputs[inputs != EOS]
    share_a = np.mean(inputs < 30000)
    assert abs(share_a - weights["a"] / sum(weights.values())) < 0.03


def test_resume_continues_with_exactly_the_next_batch(two_sources):
    directory, sources = two_sources
    data = write_prepared(directory, sources, {"a": 0.6, "b": 0.4})
    ds = train_dataset(data, SEQ, BATCH, seed=5)
    grain.experimental.assert_equal_output_after_checkpoint(grain.experimental.LimitIterDataset(ds, 25))
    uninterrupted = take(iter(ds), 120)  # past an epoch of source b
    for k in (0, 1, 7, 100):
        it = iter(ds)
        take(it, k)
        state = json.loads(json.dumps(it.get_state()))  # as the checkpoint stores it
        resumed = iter(train_dataset(data, SEQ, BATCH, seed=5))
        resumed.set_state(state)
        assert_same_batches(take(resumed, 20), uninterrupted[k:k + 20])


def test_a_foreign_data_position_is_a_clear_error(two_sources):
    directory, sources = two_sources
    it = iter(train_dataset(write_prepared(directory, sources), SEQ, BATCH, seed=0))
    with pytest.raises(DataError, match="not written by this loader"):
        it.set_state({"next_index": 7})  # the position format of the first, random-window loader


def test_batches_are_a_function_of_the_seed(two_sources):
    directory, sources = two_sources
    data = write_prepared(directory, sources)
    a, b, c = (take(iter(train_dataset(data, SEQ, BATCH, seed=s)), 5) for s in (7, 7, 8))
    assert_same_batches(a, b)
    assert not np.array_equal(a[0]["inputs"], c[0]["inputs"])


def test_source_without_training_documents_is_an_error(tmp_path):
    docs = documents(10, 3, (5, 9), np.random.default_rng(0))
    data = write_prepared(tmp_path / "p", {"full": (docs, docs), "empty": ([], docs)})
    with pytest.raises(DataError, match="source 'empty' has no training documents"):
        train_dataset(data, SEQ, BATCH, 0)
    with pytest.raises(DataError, match="differ from the configured sources"):
        load_prepared(str(tmp_path / "p"), {"full": 1.0})


def test_validation_tokens_in_source_order(two_sources):
    directory, sources = two_sources
    data = write_prepared(directory, sources)
    expected = np.concatenate(list(sources["a"][1]) + list(sources["b"][1]))
    np.testing.assert_array_equal(validation_tokens(data, 10**6), expected)
    np.testing.assert_array_equal(validation_tokens(data, 50), expected[:50])


def test_eval_batches():
    ramp = np.arange(5000, dtype=np.uint16)
    batches = eval_batches(ramp, SEQ, BATCH, max_batches=3)
    assert len(batches) == 3
    inputs = np.concatenate([b["inputs"] for b in batches])
    targets = np.concatenate([b["targets"] for b in batches])
    np.testing.assert_array_equal(inputs.ravel(), np.arange(3 * BATCH * SEQ))  # consecutive
    np.testing.assert_array_equal(targets, inputs + 1)
    assert all(b["inputs"].dtype == np.int32 and b["inputs"].shape == (BATCH, SEQ) for b in batches)
    short = np.arange(SEQ * 9 + 1)  # 9 windows -> 2 full batches of 4, the partial tail dropped
    assert [b["inputs"].shape for b in eval_batches(short, SEQ, BATCH, 10)] == [(BATCH, SEQ)] * 2
    tiny = eval_batches(np.arange(SEQ + 2), SEQ, BATCH, 10)  # fewer windows than a batch
    assert len(tiny) == 1 and tiny[0]["inputs"].shape == (1, SEQ)
    with pytest.raises(DataError, match="too short"):
        eval_batches(np.arange(SEQ), SEQ, BATCH, 10)


def test_window_batches_keep_every_window():
    tokens = np.arange(SEQ * 9 + 3)  # 9 windows -> batches of 4, 4 and 1, the 2-token tail unused
    batches = list(window_batches(tokens, SEQ, BATCH))
    assert [b["inputs"].shape for b in batches] == [(BATCH, SEQ), (BATCH, SEQ), (1, SEQ)]
    np.testing.assert_array_equal(np.concatenate([b["targets"] for b in batches]).ravel(), tokens[1:SEQ * 9 + 1])
