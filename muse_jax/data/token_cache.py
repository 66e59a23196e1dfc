"""Tokenise a corpus once and keep the token ids on disk (train/val split).

``build_token_cache(sources, cache_dir, vocab_size, val_fraction)`` returns a
:class:`TokenCache`. The cache lives in ``cache_dir/<key>/``, where the key
is a short sha256 of the sorted content hashes of the source files, the
vocabulary size, the validation fraction and :data:`CACHE_FORMAT_VERSION`;
a second call with the same inputs loads the arrays memory-mapped instead
of rebuilding. Bump :data:`CACHE_FORMAT_VERSION` whenever a change to the
code (tokenizer settings, split rule, layout) should invalidate old caches.

Directory layout::

    cache_dir/<key>/tokenizer.model   SentencePiece model (see tokenizer.py)
    cache_dir/<key>/tokenizer.vocab
    cache_dir/<key>/train.npy         1-D token ids, each document + EOS_ID
    cache_dir/<key>/val.npy
    cache_dir/<key>/meta.json

Building happens in a temporary directory ``cache_dir/.tmp-<key>-*`` that is
renamed to ``<key>`` at the very end, so an interrupted build leaves no
half-written cache (at worst a stale ``.tmp-*`` directory, safe to delete).

The split is decided per document by a hash of its text (see
:func:`is_validation`): it is the same in every run, whatever the order of
the sources or the other documents, and identical documents always land in
the same split. The tokenizer is trained on the training documents only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from muse_jax.data.documents import read_documents
from muse_jax.data.errors import DataError
from muse_jax.data.tokenizer import (
    DEFAULT_MAX_SENTENCES,
    EOS_ID,
    NUM_THREADS,
    load_tokenizer,
    train_tokenizer,
)

__all__ = [
    "CACHE_FORMAT_VERSION",
    "TokenCache",
    "build_token_cache",
    "cache_key",
    "file_sha256",
    "is_validation",
    "split_fraction",
    "token_dtype",
]

CACHE_FORMAT_VERSION = 1
TOKENIZER_FILE = "tokenizer.model"
META_FILE = "meta.json"
_ENCODE_CHUNK_CHARS = 4_000_000  # characters encoded per SentencePiece call


@dataclasses.dataclass(frozen=True, eq=False)
class TokenCache:
    """A tokenised corpus.

    Attributes:
      tokenizer_path: the SentencePiece ``.model`` file inside the cache.
      train: 1-D token ids (uint16 when the vocabulary fits, else uint32),
        the training documents concatenated, each followed by ``EOS_ID``;
        a read-only memory map when loaded from disk.
      val: the same for the validation documents.
      meta: ``meta.json``: vocab_size, dtype, val_fraction,
        train_tokens/train_documents, val_tokens/val_documents, sources
        (path as given at build time, sha256, documents), tokenizer_sha256,
        key, format_version, build_seconds.
    """

    tokenizer_path: str
    train: np.ndarray
    val: np.ndarray
    meta: dict[str, Any]


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id (< vocab_size) fits in 16 bits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def split_fraction(text: str) -> float:
    """A number in [0, 1) fixed by the text: first 8 bytes of its sha256 / 2**64."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_validation(text: str, val_fraction: float) -> bool:
    """Whether a document belongs to the validation split."""
    return split_fraction(text) < val_fraction


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's content; DataError if it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return h.hexdigest()


def cache_key(source_hashes: Iterable[str], vocab_size: int, val_fraction: float) -> str:
    """Short hash naming the cache for these inputs (source order ignored)."""
    payload = json.dumps(
        {
            "format_version": CACHE_FORMAT_VERSION,
            "sources": sorted(source_hashes),
            "vocab_size": int(vocab_size),
            "val_fraction": float(val_fraction),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def build_token_cache(
    sources: Sequence[str], cache_dir: str, vocab_size: int, val_fraction: float
) -> TokenCache:
    """Returns the token cache for ``sources``, building it if needed.

    Args:
      sources: corpus files (``.jsonl`` or ``.txt``, see documents.py).
      cache_dir: directory holding caches (created if missing).
      vocab_size: tokenizer vocabulary size (special and byte pieces included).
      val_fraction: expected share of documents in the validation split,
        in [0, 1). If it is positive but no document hashes below it (tiny
        corpora), the document with the smallest hash goes to validation so
        that the split is never empty.

    Raises:
      DataError: bad source files, no documents, or no training documents.
    """
    if not sources:
        raise DataError("no source files given")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    paths = [os.fspath(p) for p in sources]
    hashes = [file_sha256(p) for p in paths]
    key = cache_key(hashes, vocab_size, val_fraction)
    cache_dir = os.fspath(cache_dir)
    final_dir = os.path.join(cache_dir, key)
    if os.path.isfile(os.path.join(final_dir, META_FILE)):
        cache = _load(final_dir)
        _report("loaded", cache)
        return cache

    os.makedirs(cache_dir, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=cache_dir)
    try:
        # Canonical order, so the same files give the same arrays in any order.
        ordered = sorted(zip(hashes, paths))
        meta = _build(ordered, tmp_dir, vocab_size, val_fraction)
        meta["key"] = key
        with open(os.path.join(tmp_dir, META_FILE), "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False, indent=1)
        try:
            os.rename(tmp_dir, final_dir)
        except OSError:
            if not os.path.isfile(os.path.join(final_dir, META_FILE)):
                raise
            # Another process finished the same cache first; use theirs.
    finally:
        if os.path.isdir(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
    cache = _load(final_dir)
    _report("built", cache)
    return cache


def _build(
    ordered: list[tuple[str, str]], out_dir: str, vocab_size: int, val_fraction: float
) -> dict[str, Any]:
    """Writes tokenizer, train.npy, val.npy into out_dir; returns the meta."""
    start = time.perf_counter()

    def documents() -> Iterator[str]:
        for _, path in ordered:
            yield from read_documents(path)

    # Pass 1: decide the split of every document.
    fractions = np.fromiter((split_fraction(d) for d in documents()), dtype=np.float64)
    if fractions.size == 0:
        raise DataError(f"no documents in {[p for _, p in ordered]}")
    in_val = fractions < val_fraction
    if val_fraction > 0 and not in_val.any():
        in_val[np.argmin(fractions)] = True
    if in_val.all():
        raise DataError(
            f"no training documents: all {in_val.size} documents fell in the "
            f"validation split (val_fraction={val_fraction})"
        )

    # Pass 2: train the tokenizer on the training documents.
    tokenizer_path = os.path.join(out_dir, TOKENIZER_FILE)
    train_docs = (d for d, v in zip(documents(), in_val) if not v)
    train_tokenizer(train_docs, tokenizer_path, vocab_size)
    sp = load_tokenizer(tokenizer_path)
    if sp.get_piece_size() != vocab_size:  # pragma: no cover - spm enforces it
        raise DataError(f"tokenizer has {sp.get_piece_size()} pieces, not {vocab_size}")

    # Pass 3: encode, streaming the ids to disk.
    dtype = token_dtype(vocab_size)
    writers = {
        False: _NpyWriter(os.path.join(out_dir, "train.npy"), dtype),
        True: _NpyWriter(os.path.join(out_dir, "val.npy"), dtype),
    }
    per_source = {}
    doc_iter = zip(_documents_with_source(ordered), in_val)
    for chunk in _chunks(doc_iter, _ENCODE_CHUNK_CHARS):
        for is_val in (False, True):
            texts = [text for (_, text), v in chunk if v == is_val]
            if texts:
                writers[is_val].append(_encode(sp, texts, dtype))
        for (path, _), _ in chunk:
            per_source[path] = per_source.get(path, 0) + 1
    for w in writers.values():
        w.close()

    return {
        "format_version": CACHE_FORMAT_VERSION,
        "vocab_size": int(vocab_size),
        "dtype": dtype.name,
        "val_fraction": float(val_fraction),
        "train_tokens": writers[False].count,
        "train_documents": int((~in_val).sum()),
        "val_tokens": writers[True].count,
        "val_documents": int(in_val.sum()),
        "sources": [
            {"path": p, "sha256": h, "documents": per_source.get(p, 0)}
            for h, p in ordered
        ],
        "tokenizer_sha256": file_sha256(tokenizer_path),
        "tokenizer_max_sentences": DEFAULT_MAX_SENTENCES,
        "build_seconds": round(time.perf_counter() - start, 3),
    }


def _documents_with_source(ordered: list[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    for _, path in ordered:
        for doc in read_documents(path):
            yield path, doc


def _chunks(items: Iterable, max_chars: int) -> Iterator[list]:
    """Groups ((path, text), flag) items into lists of about max_chars text."""
    chunk, size = [], 0
    for item in items:
        chunk.append(item)
        size += len(item[0][1])
        if size >= max_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _encode(sp, texts: list[str], dtype: np.dtype) -> np.ndarray:
    """Token ids of texts, each followed by EOS_ID, concatenated."""
    ids = sp.encode(texts, out_type=int, num_threads=NUM_THREADS)
    flat = itertools.chain.from_iterable(itertools.chain(d, (EOS_ID,)) for d in ids)
    total = sum(len(d) for d in ids) + len(ids)
    return np.fromiter(flat, dtype=dtype, count=total)


class _NpyWriter:
    """Writes a 1-D .npy file of unknown length with bounded memory.

    Chunks go to a raw side file; ``close`` writes the .npy header, now that
    the length is known, followed by the raw bytes.
    """

    def __init__(self, path: str, dtype: np.dtype):
        self.path = path
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.count = 0
        self._raw_path = path + ".raw"
        self._raw = open(self._raw_path, "wb")

    def append(self, array: np.ndarray) -> None:
        self._raw.write(np.ascontiguousarray(array, dtype=self.dtype).tobytes())
        self.count += int(array.size)

    def close(self) -> None:
        self._raw.close()
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.count,),
        }
        with open(self.path, "wb") as out, open(self._raw_path, "rb") as raw:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out, 1 << 20)
        os.remove(self._raw_path)


def _load(directory: str) -> TokenCache:
    """Opens a finished cache directory (arrays memory-mapped, read-only)."""
    try:
        with open(os.path.join(directory, META_FILE), encoding="utf-8") as f:
            meta = json.load(f)
        train = np.load(os.path.join(directory, "train.npy"), mmap_mode="r")
        val = np.load(os.path.join(directory, "val.npy"), mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(
            f"{directory}: damaged token cache ({e}); delete the directory to rebuild"
        ) from None
    tokenizer_path = os.path.join(directory, TOKENIZER_FILE)
    if not os.path.isfile(tokenizer_path):
        raise DataError(f"{directory}: token cache lacks {TOKENIZER_FILE}; delete it to rebuild")
    return TokenCache(tokenizer_path=tokenizer_path, train=train, val=val, meta=meta)


def _report(action: str, cache: TokenCache) -> None:
    m = cache.meta
    print(
        f"[muse_jax.data] {action} token cache {os.path.dirname(cache.tokenizer_path)}: "
        f"vocab {m['vocab_size']}, train {m['train_tokens']:,} tokens / "
        f"{m['train_documents']} docs, val {m['val_tokens']:,} tokens / "
        f"{m['val_documents']} docs"
        + (f" (built in {m['build_seconds']:.1f} s)" if action == "built" else ""),
        file=sys.stderr,
        flush=True,
    )
