"""``prepare``: sources → cleaned documents → SentencePiece → ArrayRecord shards.

:func:`prepare` writes into a temporary folder beside ``out_dir`` and renames
it to ``out_dir`` only when everything is written, so an error or an
interrupt (Ctrl-C, SIGTERM) leaves nothing behind, and an existing ``out_dir``
is replaced only by a complete new one. The temporary folder of a prepare
that was killed outright (SIGKILL, power loss) is removed by the next prepare
beside it: a live one holds a lock in its folder. The result::

    out_dir/meta.json          what the loader needs: tokenizer, dtype, per source
                               and split: documents, tokens, shard files
    out_dir/report.json        what was read and dropped per source, timings
    out_dir/tokenizer.model    the SentencePiece model (trained, or a copy of the given one)
    out_dir/train/<source>-00000.array_record ...
    out_dir/val/<source>-00000.array_record ...

Steps: (1) without ``tokenizer_path``, one pass reads and cleans the
corpus to draw a bounded reservoir sample of lines from the training
documents, and SentencePiece is trained on it; (2) a second pass cleans and
encodes chunks on all workers; the calling process drops exact duplicates
(first occurrence in manifest order kept), splits by document key, and
writes each document, EOS-terminated, to its source's shards. Results come
back in task order, so the output is the same for any number of workers.
Memory is bounded by the chunks in flight, the tokenizer sample and 8 bytes
per unique document.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Iterator

import numpy as np

from muse_jax.data.chunks import ChunkReader, file_sha256
from muse_jax.data.cleaning import SeenKeys, validation_threshold
from muse_jax.data.errors import DataError
from muse_jax.data.manifest import SourceSpec, configured_sources
from muse_jax.data.parallel import WorkerPool
from muse_jax.data.shards import SHARD_MAX_TOKENS, ShardWriter
from muse_jax.data.sources import KINDS, MAX_BAD_LINE_EXAMPLES
from muse_jax.data.tokenize_chunks import (ChunkTask, CleaningSettings, process_chunk,
                                           token_dtype)
from muse_jax.data.tokenizer import load_tokenizer, train_tokenizer
from muse_jax.settings import DataSettings

__all__ = ["PREPARED_FORMAT_VERSION", "META_FILE", "REPORT_FILE", "TOKENIZER_FILE", "prepare"]

PREPARED_FORMAT_VERSION = 1
META_FILE = "meta.json"
REPORT_FILE = "report.json"
TOKENIZER_FILE = "tokenizer.model"
_PROGRESS_SECONDS = 10.0


def content_settings(settings: DataSettings) -> dict:
    """The settings that, with the input files, determine the prepared data."""
    values = {"val_fraction": settings.val_fraction, "normalize_nfkc": settings.normalize_nfkc,
              "min_chars": settings.min_chars}
    if settings.tokenizer_path:
        values["tokenizer_sha256"] = file_sha256(settings.tokenizer_path)
    else:
        values["vocab_size"] = settings.vocab_size
        values["tokenizer_sample_lines"] = settings.tokenizer_sample_lines
    return values


def _log(message: str) -> None:
    print(f"[muse_jax.data] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class _SourceCounts:
    documents: int = 0
    empty: int = 0
    too_short: int = 0
    duplicates: int = 0
    bad_lines: int = 0
    bad_line_examples: list = dataclasses.field(default_factory=list)
    characters: int = 0
    files: list = dataclasses.field(default_factory=list)

    def add(self, r) -> None:
        self.documents += r.documents
        self.empty += r.empty
        self.too_short += r.too_short
        self.bad_lines += r.bad_lines
        room = MAX_BAD_LINE_EXAMPLES - len(self.bad_line_examples)
        self.bad_line_examples.extend(r.bad_line_examples[:room])


def _tasks(sources: list[SourceSpec], cleaning: CleaningSettings, tokenizer_path: str | None,
           counts: list[_SourceCounts] | None = None) -> Iterator[ChunkTask]:
    for i, src in enumerate(sources):
        for path in src.files:
            reader = ChunkReader(path, KINDS[src.kind].boundary)
            for chunk in reader:
                yield ChunkTask(i, src.kind, src.field, chunk, cleaning, tokenizer_path)
            if counts is not None:
                counts[i].files.append({"path": path, "bytes": reader.bytes, "sha256": reader.sha256})


def _training_texts(sources, cleaning, pool: WorkerPool, threshold: int) -> Iterator[str]:
    """Cleaned, deduplicated training-split documents, in corpus order."""
    seen = SeenKeys()
    for r in pool.ordered_map(process_chunk, _tasks(sources, cleaning, None)):
        for j in np.flatnonzero(seen.first_seen(r.keys)):
            if int(r.keys[j]) >= threshold:
                yield r.texts[j]


def _tokenizer(settings: DataSettings, sources, cleaning, pool, threshold, tmp: str) -> dict:
    path = os.path.join(tmp, TOKENIZER_FILE)
    if settings.tokenizer_path:
        given = load_tokenizer(settings.tokenizer_path)
        if given.eos_id() < 0:
            raise DataError(f"{settings.tokenizer_path}: tokenizer has no EOS piece, "
                            "which separates documents")
        shutil.copyfile(settings.tokenizer_path, path)
    else:
        _log(f"reading the corpus for a tokenizer sample of at most "
             f"{settings.tokenizer_sample_lines:,} lines")
        texts = _training_texts(sources, cleaning, pool, threshold)
        train_tokenizer(texts, path, settings.vocab_size, settings.tokenizer_sample_lines)
    sp = load_tokenizer(path)
    return {"file": TOKENIZER_FILE, "sha256": file_sha256(path), "vocab_size": sp.get_piece_size(),
            "eos_id": sp.eos_id(), "given": settings.tokenizer_path or None}


class _SplitShards:
    """Routes documents to their source's train or val shards by key.

    If no document's key falls below the validation threshold (tiny corpora),
    the training document with the smallest key is moved to validation, so a
    positive val_fraction never gives an empty split: until the first
    validation document arrives, that candidate is held back instead of written.
    """

    def __init__(self, tmp: str, sources, threshold: int, max_tokens: int):
        self.threshold = threshold
        self.writers = {(i, split): ShardWriter(os.path.join(tmp, split), src.name, max_tokens)
                        for i, src in enumerate(sources) for split in ("train", "val")}
        self.holding = threshold > 0
        self.held = None  # (key, source, ids)

    def add(self, key: int, source: int, ids: np.ndarray) -> None:
        if key < self.threshold:
            self.writers[source, "val"].write(ids)
            self.holding = False
            self._release("train")
        elif self.holding and (self.held is None or key < self.held[0]):
            self._release("train")
            self.held = (key, source, ids.copy())
        else:
            self.writers[source, "train"].write(ids)

    def _release(self, split: str) -> None:
        if self.held is not None:
            _, source, ids = self.held
            self.writers[source, split].write(ids)
            self.held = None

    def close(self) -> None:
        self._release("val")
        for w in self.writers.values():
            w.close()

    def tokens(self) -> int:
        return sum(w.tokens for w in self.writers.values())


def _encode_and_shard(sources, cleaning, pool, tokenizer_path, shards: _SplitShards,
                      counts: list[_SourceCounts]) -> None:
    seen = SeenKeys()
    last_log = time.perf_counter()
    start = last_log
    for r in pool.ordered_map(process_chunk, _tasks(sources, cleaning, tokenizer_path, counts)):
        c = counts[r.source]
        c.add(r)
        new = seen.first_seen(r.keys)
        c.duplicates += int(new.size - new.sum())
        ends = np.cumsum(r.lengths)
        for j in np.flatnonzero(new):
            shards.add(int(r.keys[j]), r.source, r.ids[ends[j] - r.lengths[j]: ends[j]])
        c.characters += int(r.characters[new].sum())
        now = time.perf_counter()
        if now - last_log > _PROGRESS_SECONDS:
            tokens = shards.tokens()
            _log(f"{sources[r.source].name}: {tokens:,} tokens so far "
                 f"({tokens / (now - start):,.0f} tokens/s)")
            last_log = now


def _empty_source_error(src: SourceSpec, c: _SourceCounts) -> DataError:
    return DataError(
        f"source '{src.name}' ({src.path}): no documents left: {c.documents} read, "
        f"{c.empty} empty, {c.too_short} shorter than min_chars, {c.duplicates} duplicates, "
        f"{c.bad_lines} bad lines skipped")


def _meta_and_report(settings, sources, tokenizer, shards: _SplitShards, counts, seconds):
    meta_sources, report_sources = [], []
    for i, (src, c) in enumerate(zip(sources, counts)):
        splits = {split: {"documents": shards.writers[i, split].documents,
                          "tokens": shards.writers[i, split].tokens,
                          "shards": shards.writers[i, split].files} for split in ("train", "val")}
        meta_sources.append({"name": src.name, "kind": src.kind, "weight": src.weight,
                             "field": src.field, "path": src.path, "files": c.files, **splits})
        report_sources.append({
            "name": src.name, "documents_read": c.documents,
            "documents_kept": splits["train"]["documents"] + splits["val"]["documents"],
            "dropped": {"empty": c.empty, "too_short": c.too_short, "duplicate": c.duplicates,
                        "bad_lines": c.bad_lines},
            "bad_line_examples": c.bad_line_examples, "characters_kept": c.characters})
    train = sum(s["train"]["tokens"] for s in meta_sources)
    val = sum(s["val"]["tokens"] for s in meta_sources)
    meta = {"format_version": PREPARED_FORMAT_VERSION, "tokenizer": tokenizer,
            "dtype": token_dtype(tokenizer["vocab_size"]).name, "settings": content_settings(settings),
            "train_tokens": train, "val_tokens": val, "sources": meta_sources}
    report = {"sources": report_sources, "workers": settings.workers, "seconds": seconds,
              "tokens_per_second": round((train + val) / max(seconds["encode_and_shard"], 1e-9))}
    return meta, report


_LOCK = ".lock"
_UNLOCKED_GRACE_SECONDS = 60.0  # a folder without a lock file that is older than this is stale


def _claim(tmp: str) -> int:
    """Holds an exclusive lock in `tmp` for as long as this process lives (the fd is the lock)."""
    fd = os.open(os.path.join(tmp, _LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _is_stale(folder: str) -> bool:
    """No live prepare holds its lock (a folder with no lock file: once it is a minute old)."""
    try:
        fd = os.open(os.path.join(folder, _LOCK), os.O_RDWR)
    except FileNotFoundError:
        return time.time() - os.path.getmtime(folder) > _UNLOCKED_GRACE_SECONDS
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _remove_stale(out_dir: str) -> None:
    """Temporary folders of killed prepares of `out_dir` removed; when a kill came between the
    two renames of `_replace`, the previous out_dir is put back first."""
    parent, base = os.path.split(out_dir)
    for name in sorted(os.listdir(parent)):
        folder = os.path.join(parent, name)
        if not name.startswith((f".{base}.tmp-", f".{base}.old-")) or not _is_stale(folder):
            continue
        previous = os.path.join(folder, "previous")
        if os.path.isdir(previous) and not os.path.exists(out_dir):
            os.rename(previous, out_dir)
        _log(f"removing {folder}, left by an interrupted prepare")
        shutil.rmtree(folder, ignore_errors=True)


def _check_replaceable(out_dir: str) -> None:
    if os.path.exists(out_dir) and not (
            os.path.isdir(out_dir) and (not os.listdir(out_dir)
                                        or os.path.isfile(os.path.join(out_dir, META_FILE)))):
        raise DataError(f"{out_dir}: exists and is not prepared data (no {META_FILE}); "
                        "refusing to replace it")


def _replace(tmp: str, out_dir: str) -> None:
    """Renames tmp to out_dir; an existing out_dir is removed only once tmp is in place."""
    if not os.path.exists(out_dir):
        os.rename(tmp, out_dir)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
    previous = os.path.join(old, "previous")
    os.rename(out_dir, previous)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(previous, out_dir)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def prepare(settings: DataSettings, out_dir: str, shard_max_tokens: int = SHARD_MAX_TOKENS) -> dict:
    """Prepares the configured sources into ``out_dir``; returns its meta (meta.json).

    Raises:
      DataError: a missing file, unknown kind, empty source, or (with
        ``on_error=raise``) the first bad line, naming file, line and byte offset.
    """
    start = time.perf_counter()
    sources = configured_sources(settings, check_files=True)
    out_dir = os.path.abspath(out_dir)
    _check_replaceable(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=os.path.dirname(out_dir))
    claim = _claim(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make out_dir private
    try:
        _remove_stale(out_dir)
        cleaning = CleaningSettings(settings.normalize_nfkc, settings.min_chars, settings.on_error)
        threshold = validation_threshold(settings.val_fraction)
        counts = [_SourceCounts() for _ in sources]
        shards = _SplitShards(tmp, sources, threshold, shard_max_tokens)
        with WorkerPool(settings.workers) as pool:
            tokenizer = _tokenizer(settings, sources, cleaning, pool, threshold, tmp)
            encode_start = time.perf_counter()
            _encode_and_shard(sources, cleaning, pool, os.path.join(tmp, TOKENIZER_FILE),
                              shards, counts)
            shards.close()
        for i, (src, c) in enumerate(zip(sources, counts)):
            if shards.writers[i, "train"].documents + shards.writers[i, "val"].documents == 0:
                raise _empty_source_error(src, c)
        end = time.perf_counter()
        seconds = {"tokenizer": round(encode_start - start, 3),
                   "encode_and_shard": round(end - encode_start, 3), "total": round(end - start, 3)}
        meta, report = _meta_and_report(settings, sources, tokenizer, shards, counts, seconds)
        for name, content in ((META_FILE, meta), (REPORT_FILE, report)):
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(content, f, ensure_ascii=False, indent=1, allow_nan=False)
        os.remove(os.path.join(tmp, _LOCK))
        _replace(tmp, out_dir)
    except DataError as e:  # a file being written is named as the user knows it: in out_dir, not in tmp
        raise DataError(str(e).replace(tmp, out_dir)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(claim)
    _log(f"prepared {out_dir}: train {meta['train_tokens']:,} tokens, val {meta['val_tokens']:,} "
         f"tokens from {len(sources)} sources in {seconds['total']:.1f} s "
         f"({report['tokens_per_second']:,} tokens/s tokenising); report in {REPORT_FILE}")
    return meta
