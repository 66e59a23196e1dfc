"""The ``data`` section of the config, read in one place and checked.

Every ``cfg.data`` key is read here and nowhere else (see configs/tiny_ja.py
for each key's meaning); the rest of muse_jax.data takes a :class:`DataSettings`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from muse_jax.data.errors import DataError
from muse_jax.data.manifest import SourceSpec, read_manifest, sources_from_files
from muse_jax.data.tokenizer import MIN_VOCAB_SIZE

__all__ = ["DataSettings", "available_cores"]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class DataSettings:
    manifest: str
    source_files: tuple[str, ...]
    out_dir: str  # "" = automatic: <cache_dir>/<hash of the inputs and settings>
    cache_dir: str
    vocab_size: int
    tokenizer_path: str
    tokenizer_sample_lines: int
    val_fraction: float
    normalize_nfkc: bool
    min_chars: int
    on_error: str
    workers: int  # tokenising processes; 1 = in the calling process

    @classmethod
    def from_config(cls, data: Any, workdir: str) -> "DataSettings":
        """Reads ``cfg.data``; DataError for a value out of range."""
        s = cls(
            manifest=str(data.manifest),
            source_files=tuple(str(p) for p in data.sources),
            out_dir=str(data.out_dir),
            cache_dir=str(data.cache_dir) or os.path.join(workdir, "data"),
            vocab_size=int(data.vocab_size),
            tokenizer_path=str(data.tokenizer_path),
            tokenizer_sample_lines=int(data.tokenizer_sample_lines),
            val_fraction=float(data.val_fraction),
            normalize_nfkc=bool(data.normalize_nfkc),
            min_chars=int(data.min_chars),
            on_error=str(data.on_error),
            workers=int(data.workers) or available_cores(),
        )
        s.check()
        return s

    def check(self) -> None:
        problems = []
        if not self.manifest and not self.source_files:
            problems.append("data.manifest or data.sources must name the corpus")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if not self.tokenizer_path and self.vocab_size < MIN_VOCAB_SIZE:
            problems.append(f"data.vocab_size must be at least {MIN_VOCAB_SIZE}, got {self.vocab_size}")
        if self.tokenizer_sample_lines <= 100:  # SentencePiece's own lower bound
            problems.append(f"data.tokenizer_sample_lines must be > 100, got {self.tokenizer_sample_lines}")
        if self.min_chars < 0:
            problems.append(f"data.min_chars must be >= 0, got {self.min_chars}")
        if self.on_error not in ("raise", "skip"):
            problems.append(f"data.on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.workers < 1:
            problems.append(f"data.workers must be >= 0 (0 = all cores), got {self.workers}")
        if problems:
            raise DataError("; ".join(problems))

    def sources(self, check_files: bool = True) -> list[SourceSpec]:
        """data.sources when given, else the manifest's sources."""
        if self.source_files:
            return sources_from_files(self.source_files, check_files)
        return read_manifest(self.manifest, check_files)

    def content_settings(self) -> dict[str, Any]:
        """The settings that, with the input files, determine the prepared data."""
        settings = {
            "val_fraction": self.val_fraction,
            "normalize_nfkc": self.normalize_nfkc,
            "min_chars": self.min_chars,
        }
        if self.tokenizer_path:
            from muse_jax.data.chunks import file_sha256

            settings["tokenizer_sha256"] = file_sha256(self.tokenizer_path)
        else:
            settings["vocab_size"] = self.vocab_size
            settings["tokenizer_sample_lines"] = self.tokenizer_sample_lines
        return settings
