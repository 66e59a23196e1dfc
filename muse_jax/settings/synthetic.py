"""`data.synthetic`, `data.mqar.*`, `data.passkey.*`: a generated recall task instead of the corpus
(`muse_jax/data/synthetic.py`, docs/long_context.md). Each task reads only its own section."""

import dataclasses

from muse_jax.settings.core import one_of, read_section, require

TASKS = ("", "mqar", "passkey")
MQAR_SPECIAL = 1  # token 0: the blank of the query region
PASSKEY_SPECIAL = 12  # token 0 unused, 1..10 the digits, 11 the key marker, 12 the query marker


@dataclasses.dataclass(frozen=True)
class MQARSettings:
    """`data.mqar.*`: multi-query associative recall."""

    num_pairs: int = 8
    vocab_size: int = 128

    @property
    def num_keys(self) -> int:
        """Keys are 1..K, values K+1..2K: K = (vocab_size − 1) // 2."""
        return (self.vocab_size - MQAR_SPECIAL) // 2

    def check(self, seq_len: int, key: str) -> None:
        require(self.num_pairs >= 1, f"data.mqar.num_pairs must be >= 1, got {self.num_pairs}")
        require(self.num_keys >= self.num_pairs,
                f"data.mqar.vocab_size={self.vocab_size} leaves {self.num_keys} keys, fewer than "
                f"data.mqar.num_pairs={self.num_pairs}")
        require(4 * self.num_pairs <= seq_len + 1,
                f"{key}={seq_len} is too short for data.mqar.num_pairs={self.num_pairs}: the pairs and "
                f"their queries need 4 * num_pairs <= seq_len + 1 tokens")


@dataclasses.dataclass(frozen=True)
class PasskeySettings:
    """`data.passkey.*`: passkey retrieval."""

    digits: int = 5
    depth: float = -1.0  # -1: uniform per sequence
    vocab_size: int = 64

    def check(self, seq_len: int, key: str) -> None:
        require(self.digits >= 1, f"data.passkey.digits must be >= 1, got {self.digits}")
        require(self.depth == -1.0 or 0.0 <= self.depth <= 1.0,
                f"data.passkey.depth must be in [0, 1] or -1 (random), got {self.depth}")
        require(self.vocab_size > PASSKEY_SPECIAL + 1,
                f"data.passkey.vocab_size must be > {PASSKEY_SPECIAL + 1} (digits, markers and filler), "
                f"got {self.vocab_size}")
        require(2 * (self.digits + 1) <= seq_len + 1,
                f"{key}={seq_len} is too short for data.passkey.digits={self.digits}: the key and the "
                f"question need 2 * (digits + 1) <= seq_len + 1 tokens")


@dataclasses.dataclass(frozen=True)
class SyntheticSettings:
    task: str = ""  # "" = the corpus
    mqar: MQARSettings = MQARSettings()
    passkey: PasskeySettings = PasskeySettings()

    @classmethod
    def from_config(cls, data) -> "SyntheticSettings":
        s = cls(task=str(data.synthetic), mqar=read_section(MQARSettings, data.mqar),
                passkey=read_section(PasskeySettings, data.passkey))
        one_of("data.synthetic", s.task, TASKS)
        return s

    @property
    def enabled(self) -> bool:
        return bool(self.task)

    @property
    def vocab_size(self) -> int:
        return self.mqar.vocab_size if self.task == "mqar" else self.passkey.vocab_size

    def check_length(self, seq_len: int, key: str) -> None:
        """ConfigError unless a sequence of `seq_len` inputs (the config key `key`) holds the task."""
        if self.task == "mqar":
            self.mqar.check(seq_len, key)
        elif self.task == "passkey":
            self.passkey.check(seq_len, key)
