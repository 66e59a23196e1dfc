"""Batches for training (random windows, resumable) and evaluation (fixed).

Both take a 1-D array of token ids (e.g. ``TokenCache.train`` / ``.val``,
possibly a read-only memory map) and yield dicts
``{"inputs": int32[B, L], "targets": int32[B, L]}`` where ``targets`` is
``inputs`` shifted left by one token (next-token prediction).
"""

from __future__ import annotations

import numpy as np
import grain

from muse_jax.data.errors import DataError

__all__ = ["train_dataset", "eval_batches"]

# Synchronous reading: no threads, no prefetch buffer. Each element costs a
# slice and a copy, so this is cheap, and it keeps the order and the
# checkpoint state trivially exact.
_READ_OPTIONS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def _check_length(tokens: np.ndarray, seq_len: int, what: str) -> None:
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if len(tokens) < seq_len + 1:
        raise DataError(
            f"{what} has {len(tokens)} tokens, too short for one window of "
            f"seq_len + 1 = {seq_len + 1} tokens"
        )


def _to_batch(windows) -> dict[str, np.ndarray]:
    stacked = np.stack(windows)
    return {
        "inputs": np.ascontiguousarray(stacked[:, :-1]),
        "targets": np.ascontiguousarray(stacked[:, 1:]),
    }


def train_dataset(
    tokens: np.ndarray, seq_len: int, batch_size: int, seed: int
) -> grain.IterDataset:
    """An endless, deterministic stream of batches of random windows.

    Example ``i`` is the window ``tokens[s : s + seq_len + 1]`` whose start
    ``s`` is drawn uniformly by a generator seeded with (``seed``, ``i``),
    so batch ``k`` is a pure function of (tokens, seq_len, batch_size, seed,
    k): the same seed gives the same batches on any machine.

    ``it = iter(dataset)`` is a ``grain.DatasetIterator``;
    ``it.get_state()`` is ``{"next_index": k}`` (k = batches returned so
    far), a plain JSON-serialisable dict, and ``it.set_state(state)`` on a
    fresh iterator continues with exactly batch k.

    Raises:
      DataError: ``tokens`` shorter than seq_len + 1.
    """
    tokens = np.asarray(tokens)  # a memmap stays mapped: no copy
    _check_length(tokens, seq_len, "training split")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    window = seq_len + 1
    num_starts = len(tokens) - seq_len  # starts 0 .. len - window
    # One "epoch" is as many windows as fit without overlap; it only sets the
    # period of the index sequence, the windows themselves are random.
    epoch = max(1, len(tokens) // window)

    def random_window(_, rng: np.random.Generator) -> np.ndarray:
        start = int(rng.integers(num_starts))
        return np.asarray(tokens[start : start + window], dtype=np.int32)

    return (
        grain.MapDataset.range(epoch)
        .repeat(None)
        .random_map(random_window, seed=seed)
        .batch(batch_size, batch_fn=_to_batch)
        .to_iter_dataset(_READ_OPTIONS)
    )


def eval_batches(
    tokens: np.ndarray, seq_len: int, batch_size: int, max_batches: int
) -> list[dict[str, np.ndarray]]:
    """Fixed evaluation batches from the start of ``tokens``.

    Window ``j`` covers ``tokens[j*seq_len : j*seq_len + seq_len + 1]``:
    consecutive windows share only their boundary token, so every target
    token is predicted exactly once. Batches are consecutive groups of
    ``batch_size`` windows, at most ``max_batches`` of them; a trailing
    partial group is dropped so that all batches have the same shape,
    except when fewer than ``batch_size`` windows fit at all, in which case
    there is a single smaller batch holding all of them.

    Raises:
      DataError: ``tokens`` shorter than seq_len + 1 (no window at all).
    """
    tokens = np.asarray(tokens)
    _check_length(tokens, seq_len, "validation split")
    if batch_size < 1 or max_batches < 1:
        raise ValueError(
            f"batch_size and max_batches must be positive, got {batch_size}, {max_batches}"
        )
    num_windows = (len(tokens) - 1) // seq_len
    rows = min(batch_size, num_windows)
    num_batches = min(max_batches, num_windows // rows)
    batches = []
    for b in range(num_batches):
        windows = [
            np.asarray(tokens[j * seq_len : j * seq_len + seq_len + 1], dtype=np.int32)
            for j in range(b * rows, (b + 1) * rows)
        ]
        batches.append(_to_batch(windows))
    return batches
