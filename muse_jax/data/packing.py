"""Token streams → fixed-length ``(inputs, targets)`` windows and batches.

A window is ``seq_len + 1`` consecutive tokens; ``inputs`` is all but its
last token and ``targets`` all but its first (next-token prediction). Window
k + 1 starts at the last token of window k, so every token of the stream is
a target exactly once. Documents already end with EOS, so packing them back
to back needs no padding and no separator.

* :class:`PackedWindowsIterDataset`: training windows from an endless stream
  of documents, resumable exactly (its state is JSON).
* :func:`eval_batches`: fixed validation batches from a token array.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

import grain
import numpy as np

from muse_jax.data.errors import DataError

__all__ = ["PackedWindowsIterDataset", "to_batch", "eval_batches", "eval_window_tokens", "window_batches"]


def to_batch(windows) -> dict[str, np.ndarray]:
    """Stacks windows of seq_len + 1 tokens into int32 ``inputs`` / ``targets``."""
    stacked = np.stack(windows).astype(np.int32, copy=False)
    return {
        "inputs": np.ascontiguousarray(stacked[:, :-1]),
        "targets": np.ascontiguousarray(stacked[:, 1:]),
    }


class _PackedWindowsIterator(grain.DatasetIterator):
    """State: the parent's state just before the document holding the next
    window's first token, and that token's position in the document."""

    def __init__(self, parent: grain.DatasetIterator, window: int):
        super().__init__(parent)
        self._window = window
        self._doc_state = copy.deepcopy(parent.get_state())
        self._doc: np.ndarray | None = None  # None: not read yet from _doc_state
        self._pos = 0

    def _next_document(self) -> None:
        self._doc_state = copy.deepcopy(self._parent.get_state())
        self._doc = next(self._parent)
        self._pos = 0

    def __next__(self) -> np.ndarray:
        if self._doc is None:
            self._doc = next(self._parent)  # the parent stands at _doc_state
            if not 0 <= self._pos < len(self._doc):  # a restored position must lie inside its document
                raise DataError(f"the checkpoint's data position (token {self._pos} of a document of "
                                f"{len(self._doc)} tokens) lies beyond the prepared data: the data changed "
                                "since the checkpoint; prepare it as it was, or start a new workdir")
        pieces, need = [], self._window
        while True:
            available = len(self._doc) - self._pos
            if available >= need:
                pieces.append(self._doc[self._pos:self._pos + need])
                self._pos += need - 1  # the next window starts at this one's last token
                return np.concatenate(pieces) if len(pieces) > 1 else pieces[0].copy()
            if available > 0:
                pieces.append(self._doc[self._pos:])
                need -= available
            self._next_document()

    def get_state(self) -> dict[str, Any]:
        return {"document": self._doc_state, "position": int(self._pos)}

    def set_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or set(state) != {"document", "position"}:
            raise DataError(f"the checkpoint's data position {state!r} was not written by this "
                            "loader; resume in the workdir it came from, or start a new workdir")
        self._parent.set_state(state["document"])
        self._doc_state = copy.deepcopy(state["document"])
        self._doc = None
        self._pos = int(state["position"])


class PackedWindowsIterDataset(grain.IterDataset):
    """Windows of ``window`` tokens packed from a stream of 1-D token arrays."""

    def __init__(self, parent: grain.IterDataset, window: int):
        if window < 2:
            raise ValueError(f"a window needs at least 2 tokens, got {window}")
        super().__init__(parent)
        self._window = window

    def __iter__(self) -> _PackedWindowsIterator:
        return _PackedWindowsIterator(self._parent.__iter__(), self._window)

    def __str__(self) -> str:
        return f"PackedWindowsIterDataset(window={self._window})"


def eval_batches(
    tokens: np.ndarray, seq_len: int, batch_size: int, max_batches: int
) -> list[dict[str, np.ndarray]]:
    """Fixed evaluation batches from the start of ``tokens``.

    Window ``j`` covers ``tokens[j*seq_len : j*seq_len + seq_len + 1]``, so
    every target token is predicted exactly once. Batches are consecutive
    groups of ``batch_size`` windows, at most ``max_batches`` of them; a
    trailing partial group is dropped so that all batches have one shape,
    except when fewer than ``batch_size`` windows fit at all: then there is a
    single smaller batch holding all of them.

    Raises:
      DataError: ``tokens`` shorter than seq_len + 1 (no window at all).
    """
    covered = eval_window_tokens(tokens, seq_len, batch_size, max_batches)
    return list(window_batches(covered, seq_len, min(batch_size, (len(covered) - 1) // seq_len)))


def eval_window_tokens(tokens: np.ndarray, seq_len: int, batch_size: int, max_batches: int) -> np.ndarray:
    """The start of ``tokens`` that :func:`eval_batches` covers: its windows' tokens, each target
    once (window_batches of it with ``batch_size`` rows are those batches).

    Raises:
      DataError: ``tokens`` shorter than seq_len + 1 (no window at all).
    """
    tokens = np.asarray(tokens)
    if seq_len < 1 or batch_size < 1 or max_batches < 1:
        raise ValueError(f"seq_len, batch_size and max_batches must be positive, "
                         f"got {seq_len}, {batch_size}, {max_batches}")
    if len(tokens) < seq_len + 1:
        raise DataError(f"validation split has {len(tokens)} tokens, too short for one window "
                        f"of seq_len + 1 = {seq_len + 1} tokens")
    num_windows = (len(tokens) - 1) // seq_len
    rows = min(batch_size, num_windows)
    used = min(max_batches, num_windows // rows) * rows
    return tokens[: used * seq_len + 1]


def window_batches(tokens: np.ndarray, seq_len: int, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Every window of ``tokens`` (window ``j`` as in :func:`eval_batches`), in consecutive
    batches of ``batch_size`` rows, the last one smaller: every target token once, none dropped."""
    num_windows = (len(tokens) - 1) // seq_len
    for start in range(0, num_windows, batch_size):
        rows = range(start, min(start + batch_size, num_windows))
        yield to_batch([tokens[j * seq_len: j * seq_len + seq_len + 1] for j in rows])
