"""`eval.*`: the window `--mode=eval` reads, and how its loss is resolved by position."""

import dataclasses

from muse_jax.settings.core import require


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    seq_len: int  # the window of --mode=eval (`eval.seq_len`, 0 in the config = train.seq_len)
    position_buckets: int

    @classmethod
    def from_config(cls, e, train_seq_len: int) -> "EvalSettings":
        seq_len, buckets = int(e.seq_len), int(e.position_buckets)
        require(seq_len >= 0, f"eval.seq_len must be >= 1, or 0 for train.seq_len, got {seq_len}")
        s = cls(seq_len=seq_len or train_seq_len, position_buckets=buckets)
        require(1 <= buckets <= s.seq_len,
                f"eval.position_buckets must be in [1, eval.seq_len={s.seq_len}], got {buckets}")
        return s
