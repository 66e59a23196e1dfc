"""The training loader: prepared shards → shuffled, weighted mixture → packed batches.

Per source, the training documents (one ArrayRecord record each) are
shuffled globally with a permutation that changes every epoch
(``MapDataset.shuffle`` then ``repeat``), and the sources are interleaved by
``MapDataset.mix``. A source's weight is its share of training *tokens*, so
its documents are drawn in proportion to weight / mean document length.
Reading and decoding run ahead in ``_READ_THREADS`` threads; documents are
then packed into windows of seq_len + 1 tokens (:mod:`muse_jax.data.packing`)
and batched.

Everything is indexed, so batch k is a pure function of (prepared data,
weights, seq_len, batch_size, seed, k), and the iterator's ``get_state()``
is a small JSON dict from which ``set_state`` resumes at exactly the next
batch.
"""

from __future__ import annotations

import hashlib

import grain
import numpy as np

from muse_jax.data.errors import DataError
from muse_jax.data.packing import PackedWindowsIterDataset, to_batch
from muse_jax.data.prepared import PreparedData
from muse_jax.data.shards import read_records, record_ids

__all__ = ["train_dataset", "validation_tokens"]

_READ_THREADS = 2
_READ_AHEAD_DOCUMENTS = 64


def _source_seed(seed: int, name: str) -> int:
    """A shuffle seed per source, fixed by the run seed and the source's name."""
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _source_documents(data: PreparedData, index: int, seed: int) -> grain.MapDataset:
    split = data.split(index, "train")
    dtype = data.dtype
    return (
        grain.MapDataset.source(read_records(split["shards"]))
        .shuffle(seed=_source_seed(seed, data.source_names[index]))
        .repeat(None)
        .map(lambda record: record_ids(record, dtype))
    )


def train_dataset(data: PreparedData, seq_len: int, batch_size: int, seed: int) -> grain.IterDataset:
    """An endless, deterministic, resumable stream of ``{"inputs", "targets"}``
    int32 [batch_size, seq_len] batches.

    Raises:
      DataError: a source without training documents.
    """
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len and batch_size must be positive, got {seq_len}, {batch_size}")
    datasets, doc_weights = [], []
    for i, (name, weight) in enumerate(zip(data.source_names, data.weights)):
        split = data.split(i, "train")
        if split["documents"] == 0:
            raise DataError(f"{data.directory}: source '{name}' has no training documents to mix")
        datasets.append(_source_documents(data, i, seed))
        doc_weights.append(weight / (split["tokens"] / split["documents"]))
    documents = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, doc_weights)
    read = grain.ReadOptions(num_threads=_READ_THREADS, prefetch_buffer_size=_READ_AHEAD_DOCUMENTS)
    return PackedWindowsIterDataset(documents.to_iter_dataset(read), seq_len + 1).batch(
        batch_size, batch_fn=to_batch)


def validation_tokens(data: PreparedData, max_tokens: int) -> np.ndarray:
    """The first ``max_tokens`` validation tokens: every source's validation
    documents in order, sources in manifest order."""
    pieces, total = [], 0
    for i in range(len(data.source_names)):
        shards = data.split(i, "val")["shards"]
        records = read_records(shards) if shards else []
        for j in range(len(records)):
            if total >= max_tokens:
                break
            ids = record_ids(records[j], data.dtype)
            pieces.append(ids[: max_tokens - total])
            total += pieces[-1].size
    return np.concatenate(pieces) if pieces else np.zeros(0, data.dtype)
