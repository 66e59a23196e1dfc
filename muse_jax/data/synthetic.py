"""Synthetic recall tasks as a batch source: multi-query associative recall and passkey retrieval.

A batch is ``{"inputs", "targets": int32 [B, L], "loss_mask": float32 [B, L]}`` cut from windows
of L + 1 tokens (inputs = window[:-1], targets = window[1:], as for text); ``loss_mask`` is 1
exactly at the answer targets, so the loss and the accuracy count only those.

**MQAR** (multi-query associative recall, Arora et al. 2023, "Zoology"); vocab V, D pairs,
K = (V − 1) // 2 keys::

    window = k_1 v_1 … k_D v_D | query region
    keys   D distinct of 1..K, values D distinct of K+1..2K (v_i belongs to k_i)
    query region: the other L + 1 − 2D tokens as slots of two (an odd last token is 0); D distinct
                  slots, uniform, hold (k_π(j), v_π(j)) for a uniform permutation π (every key is
                  asked once, in random order), the other slots (0, 0)
    answers: the targets that are a queried value, i.e. predicted from the query key alone

**Passkey retrieval** (Mohtashami & Jaggi 2023); vocab V, k digits::

    window = filler[:p] KEY d_1 … d_k filler[p:] QUERY d_1 … d_k
    filler: F = L + 1 − 2(k + 1) tokens uniform on 13..V−1; digit d ∈ 0..9 is token d + 1,
            KEY = 11, QUERY = 12; p = round(depth · F), or uniform on 0..F when depth = −1
    answers: the last k targets (the digits after QUERY)

Batch i of a split is a pure function of (task settings, L, batch size, split, seed, i): the
training stream draws from ``default_rng([TAG, 0, seed, i])``, evaluation from
``default_rng([TAG, 1, i])`` — the same held-out set for every run seed, disjoint from training
by construction of the seed sequence. No files; the training iterator's state is ``{"batch": i}``.
"""

from __future__ import annotations

import numpy as np

from muse_jax.data.errors import DataError
from muse_jax.settings.synthetic import MQARSettings, PasskeySettings, SyntheticSettings

__all__ = ["SyntheticTask", "SyntheticBatches", "mqar_window", "passkey_window"]

TAG = 0x5E17  # first entropy word of every synthetic stream
TRAIN, EVAL = 0, 1
KEY_MARKER, QUERY_MARKER, FIRST_FILLER = 11, 12, 13


def mqar_window(rng: np.random.Generator, seq_len: int, task: MQARSettings) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [seq_len + 1], answer [seq_len] bool) of one MQAR sequence (module docstring)."""
    d, k = task.num_pairs, task.num_keys
    keys = rng.choice(np.arange(1, k + 1), size=d, replace=False)
    values = rng.choice(np.arange(k + 1, 2 * k + 1), size=d, replace=False)
    window = np.zeros(seq_len + 1, np.int64)
    window[0:2 * d:2], window[1:2 * d:2] = keys, values
    slots = np.sort(rng.choice((seq_len + 1 - 2 * d) // 2, size=d, replace=False))
    asked = rng.permutation(d)
    where = 2 * d + 2 * slots  # position of each query key
    window[where], window[where + 1] = keys[asked], values[asked]
    answer = np.zeros(seq_len, bool)
    answer[where] = True  # target at input position `where` is window[where + 1], the value
    return window, answer


def passkey_window(rng: np.random.Generator, seq_len: int, task: PasskeySettings) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [seq_len + 1], answer [seq_len] bool) of one passkey sequence (module docstring)."""
    k = task.digits
    fill = seq_len + 1 - 2 * (k + 1)
    filler = rng.integers(FIRST_FILLER, task.vocab_size, size=fill)
    digits = rng.integers(0, 10, size=k) + 1
    at = int(rng.integers(0, fill + 1)) if task.depth < 0 else int(round(task.depth * fill))
    window = np.concatenate([filler[:at], [KEY_MARKER], digits, filler[at:], [QUERY_MARKER], digits])
    answer = np.zeros(seq_len, bool)
    answer[seq_len - k:] = True
    return window, answer


class SyntheticTask:
    """The task of `data.synthetic` as a source of batches."""

    def __init__(self, settings: SyntheticSettings):
        if not settings.enabled:
            raise ValueError("data.synthetic is empty: the corpus, not a synthetic task")
        self.settings = settings
        self.vocab_size = settings.vocab_size

    def describe(self) -> str:
        s = self.settings
        if s.task == "mqar":
            return f"synthetic mqar ({s.mqar.num_pairs} pairs, vocab {s.mqar.vocab_size})"
        depth = "random" if s.passkey.depth < 0 else f"{s.passkey.depth:g}"
        return f"synthetic passkey ({s.passkey.digits} digits, depth {depth}, vocab {s.passkey.vocab_size})"

    def window(self, rng: np.random.Generator, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        if self.settings.task == "mqar":
            return mqar_window(rng, seq_len, self.settings.mqar)
        return passkey_window(rng, seq_len, self.settings.passkey)

    def batch(self, entropy: list[int], seq_len: int, batch_size: int) -> dict[str, np.ndarray]:
        """`batch_size` windows from the stream `default_rng(entropy)`."""
        rng = np.random.default_rng(entropy)
        windows, answers = zip(*(self.window(rng, seq_len) for _ in range(batch_size)))
        stacked = np.stack(windows).astype(np.int32)
        return {"inputs": np.ascontiguousarray(stacked[:, :-1]), "targets": np.ascontiguousarray(stacked[:, 1:]),
                "loss_mask": np.stack(answers).astype(np.float32)}

    def train_batches(self, seq_len: int, batch_size: int, seed: int) -> "SyntheticBatches":
        return SyntheticBatches(self, seq_len, batch_size, seed)

    def eval_batches(self, seq_len: int, batch_size: int, num_batches: int) -> list[dict[str, np.ndarray]]:
        """The held-out set: the first `num_batches` batches of the evaluation stream."""
        return [self.batch([TAG, EVAL, i], seq_len, batch_size) for i in range(num_batches)]


class SyntheticBatches:
    """The endless training stream of a task; resumable: its state is {"batch": index of the next}."""

    def __init__(self, task: SyntheticTask, seq_len: int, batch_size: int, seed: int):
        self.task, self.seq_len, self.batch_size = task, seq_len, batch_size
        self.seed = seed % (1 << 64)  # entropy words are non-negative; one-to-one for |seed| < 2**63
        self.index = 0

    def __iter__(self) -> "SyntheticBatches":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.task.batch([TAG, TRAIN, self.seed, self.index], self.seq_len, self.batch_size)
        self.index += 1
        return batch

    def get_state(self) -> dict:
        return {"batch": self.index}

    def set_state(self, state: dict) -> None:
        if not isinstance(state, dict) or set(state) != {"batch"}:
            raise DataError(f"the checkpoint's data position {state!r} was not written by the synthetic task's "
                            "loader; resume in the workdir it came from, or start a new workdir")
        self.index = int(state["batch"])
