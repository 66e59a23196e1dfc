"""ArrayRecord shards of tokenised documents: one record per document.

A record is the document's token ids followed by EOS, as little-endian
uint16 (vocabularies up to 65,536) or uint32 bytes. Each record is its own
chunk (``group_size:1``), so any document is read without reading its
neighbours: what a globally shuffled loader needs.
A source's documents of one split go to ``<split>/<name>-00000.array_record``,
``-00001``, ... a new file every ``max_tokens`` tokens.

Memory: an open ArrayRecord writer buffers up to about 16 MB (measured with
array-record 0.8.6), so ``prepare`` holds at most ~32 MB per source (train
and validation writers), whatever the corpus size.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from muse_jax.data.errors import DataError

__all__ = ["SHARD_MAX_TOKENS", "ShardRecords", "ShardWriter", "record_ids", "read_records"]

SHARD_MAX_TOKENS = 64 * 2**20
# Uncompressed: a third of snappy's CPU time to write (snappy would save ~20 % of
# disk on token ids), and the fastest random reads.
_OPTIONS = "group_size:1,uncompressed"


class ShardWriter:
    """Writes records to ``<directory>/<stem>-NNNNN.array_record`` files."""

    def __init__(self, directory: str, stem: str, max_tokens: int = SHARD_MAX_TOKENS):
        self.directory, self.stem, self.max_tokens = directory, stem, max_tokens
        self.files: list[str] = []  # names relative to directory's parent
        self.documents = 0
        self.tokens = 0
        self._writer = None
        self._shard_tokens = 0

    def write(self, ids: np.ndarray) -> None:
        if self._writer is None or self._shard_tokens >= self.max_tokens:
            self._next_file()
        self._writer.write(ids.tobytes())
        self.documents += 1
        self.tokens += int(ids.size)
        self._shard_tokens += int(ids.size)

    def _next_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
        os.makedirs(self.directory, exist_ok=True)
        name = f"{self.stem}-{len(self.files):05d}.array_record"
        self._writer = ArrayRecordWriter(os.path.join(self.directory, name), _OPTIONS)
        self.files.append(os.path.join(os.path.basename(self.directory), name))
        self._shard_tokens = 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def record_ids(record: bytes, dtype: np.dtype) -> np.ndarray:
    """A record's token ids (read-only view of the bytes)."""
    return np.frombuffer(record, dtype=dtype)


class ShardRecords:
    """Random access to the records of several shards, in order (a grain data source). A shard
    that cannot be opened or a record that cannot be read (Riegeli checks every chunk's hash) is
    a DataError naming the file."""

    def __init__(self, paths: Sequence[str]):
        import grain

        self.paths = list(paths)
        self._files = [self._open(grain.sources.ArrayRecordDataSource, p) for p in self.paths]
        self._ends = np.cumsum([len(f) for f in self._files], dtype=np.int64)

    @staticmethod
    def _open(source, path: str):
        try:
            return source([path])
        except Exception as e:  # array_record: RuntimeError / ValueError with Riegeli's reason
            raise _damaged(path, e) from None

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, index: int) -> bytes:
        file = int(np.searchsorted(self._ends, index, side="right"))
        local = int(index - (self._ends[file - 1] if file else 0))
        try:
            return self._files[file][local]
        except Exception as e:
            raise _damaged(self.paths[file], e, f"record {local}") from None


def _damaged(path: str, error: Exception, where: str = "") -> DataError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return DataError(f"{path}: damaged shard{f' ({where})' if where else ''}: {reason[:300]}; "
                     "run --mode=prepare again")


def read_records(paths: Sequence[str]) -> ShardRecords:
    """Random-access records of the given shards, in order (a grain data source)."""
    return ShardRecords(paths)
