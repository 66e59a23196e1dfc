"""What a tokenising process does with one chunk: documents → cleaned → keys → token ids.

:func:`process_chunk` runs in worker processes (or in the calling process
when there is one worker). It reads the chunk's documents
(:mod:`muse_jax.data.sources`), cleans them (:mod:`muse_jax.data.cleaning`),
drops empty and too-short ones, and returns for the kept ones their keys
and either their text (to sample tokenizer training lines) or their token
ids, each document followed by the tokenizer's EOS id. Deduplication and
the train/validation split are left to the single process that sees every
key in order.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from muse_jax.data.chunks import Chunk
from muse_jax.data.cleaning import clean_document, document_key
from muse_jax.data.sources import BadLines, chunk_documents

__all__ = ["CleaningSettings", "ChunkTask", "ChunkResult", "process_chunk", "token_dtype"]


@dataclasses.dataclass(frozen=True)
class CleaningSettings:
    normalize_nfkc: bool
    min_chars: int
    on_error: str  # raise | skip


@dataclasses.dataclass(frozen=True)
class ChunkTask:
    source: int  # index of the source in the manifest
    kind: str
    field: str
    chunk: Chunk
    cleaning: CleaningSettings
    tokenizer_path: str | None  # None: return cleaned texts instead of token ids


@dataclasses.dataclass
class ChunkResult:
    source: int
    documents: int  # read from the chunk
    empty: int
    too_short: int
    bad_lines: int
    bad_line_examples: list[str]
    characters: np.ndarray  # int64 characters per kept document
    keys: np.ndarray  # uint64, one per kept document
    texts: list[str] | None  # kept documents (when not tokenising)
    lengths: np.ndarray | None  # int64 tokens per kept document, EOS included
    ids: np.ndarray | None  # token ids of the kept documents, concatenated


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 when every id fits in 16 bits, else uint32."""
    return np.dtype("<u2" if vocab_size <= 2**16 else "<u4")


_TOKENIZERS: dict = {}


def _tokenizer(path: str):
    if path not in _TOKENIZERS:
        from muse_jax.data.tokenizer import load_tokenizer

        _TOKENIZERS.clear()
        _TOKENIZERS[path] = load_tokenizer(path)
    return _TOKENIZERS[path]


def _encode(sp, texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Token counts (EOS included) and the concatenated ids of UTF-8 ``texts``, each + EOS."""
    dtype = token_dtype(sp.get_piece_size())
    if not texts:
        return np.zeros(0, np.int64), np.zeros(0, dtype)
    # SentencePiece's numpy output (int32) is faster than its lists of Python ints.
    encoded = sp.encode(texts, return_type="numpy", add_eos=True, num_threads=1)
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    return lengths, np.concatenate(encoded).astype(dtype)


def process_chunk(task: ChunkTask) -> ChunkResult:
    """Reads, cleans and (with a tokenizer) encodes the documents of one chunk.

    Raises:
      DataError: a bad line, when ``on_error`` is ``raise``.
    """
    bad = BadLines(task.cleaning.on_error)
    nfkc, min_chars = task.cleaning.normalize_nfkc, task.cleaning.min_chars
    read = empty = too_short = 0
    kept: list[str] = []
    for text in chunk_documents(task.kind, task.chunk, bad, task.field):
        read += 1
        text = clean_document(text, nfkc)
        if not text:
            empty += 1
        elif len(text) < min_chars:
            too_short += 1
        else:
            kept.append(text)
    encoded = [text.encode("utf-8") for text in kept]  # hashed, then tokenised as they are
    keys = np.fromiter(map(document_key, encoded), dtype=np.uint64, count=len(kept))
    lengths = ids = texts = None
    if task.tokenizer_path is None:
        texts = kept
    else:
        lengths, ids = _encode(_tokenizer(task.tokenizer_path), encoded)
    return ChunkResult(task.source, read, empty, too_short, bad.count, bad.examples,
                       np.fromiter(map(len, kept), np.int64, len(kept)), keys, texts,
                       lengths, ids)
