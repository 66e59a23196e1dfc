"""Cleaning documents: normalisation, control characters, the split key, exact dedup.

* :func:`clean_document`: control characters (Unicode category Cc, except tab
  and newline) are removed, so "\\r\\n" becomes "\\n"; optionally Unicode NFKC
  (full-width ASCII → ASCII, half-width katakana → full-width, ...); leading
  and trailing whitespace is stripped.
* :func:`document_key`: a 64-bit hash of the cleaned text. It decides the
  train/validation split (:func:`validation_threshold`): the same text lands
  in the same split in every run, whatever the order or the other documents.
  It is also the identity used to drop exact duplicates.
* :class:`SeenKeys`: the keys seen so far, 8 bytes per unique document.
  Two different documents share a key with probability 2**-64 per pair
  (about 3e-4 over 10**8 documents), in which case the later one is dropped.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

__all__ = ["clean_document", "document_key", "nfkc_normalize", "validation_threshold", "SeenKeys"]

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def nfkc_normalize(text: str) -> str:
    """Unicode NFKC, line by line (also what prompts get when the training text got it)."""
    if unicodedata.is_normalized("NFKC", text):  # fast path: most text already is
        return text
    # "\n" never combines, so lines normalise independently; most stay as they are.
    return "\n".join(
        line if unicodedata.is_normalized("NFKC", line) else unicodedata.normalize("NFKC", line)
        for line in text.split("\n")
    )


def clean_document(text: str, nfkc: bool) -> str:
    """The cleaned document (see the module docstring)."""
    text = _CONTROL.sub("", text)
    if nfkc:
        text = nfkc_normalize(text)
    return text.strip()


def document_key(text: str | bytes) -> int:
    """The first 64 bits of the SHA-1 of the UTF-8 text (str, or already encoded),
    as an unsigned integer. (SHA-1 for speed, with CPU support twice as fast as
    blake2b here; nothing depends on it resisting attacks.)"""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return int.from_bytes(hashlib.sha1(data, usedforsecurity=False).digest()[:8], "little")


def validation_threshold(val_fraction: float) -> int:
    """Documents whose key is below this are validation documents."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    return int(val_fraction * 2**64)


class SeenKeys:
    """A set of uint64 keys kept as a few sorted arrays (sizes at least doubling),
    merged like the digits of a binary counter: O(log n) arrays to search, and
    8 bytes per key."""

    def __init__(self):
        self._runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(run.size for run in self._runs)

    def first_seen(self, keys) -> np.ndarray:
        """Adds ``keys``; returns, for each, whether it was new (first occurrence
        within ``keys`` and not seen in an earlier call)."""
        keys = np.asarray(keys, dtype=np.uint64)
        new = np.zeros(keys.size, dtype=bool)
        if keys.size == 0:
            return new
        unique, first = np.unique(keys, return_index=True)
        fresh = np.ones(unique.size, dtype=bool)
        for run in self._runs:
            at = np.minimum(np.searchsorted(run, unique), run.size - 1)
            fresh &= run[at] != unique
        new[first[fresh]] = True
        self._add(unique[fresh])
        return new

    def _add(self, run: np.ndarray) -> None:
        if run.size == 0:
            return
        self._runs.append(run)
        while len(self._runs) > 1 and self._runs[-2].size <= 2 * self._runs[-1].size:
            last = self._runs.pop()
            self._runs[-1] = np.sort(np.concatenate([self._runs[-1], last]))
