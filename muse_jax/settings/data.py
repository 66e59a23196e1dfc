"""`data.*`: the corpus, its preparation and the tokenizer (README "Data").

Every `data.*` key is read here; muse_jax.data takes a `DataSettings`."""

import dataclasses
import os

from muse_jax.settings.core import ConfigError
from muse_jax.settings.synthetic import SyntheticSettings

CACHE_DIR_ENV = "MUSE_JAX_CACHE_DIR"  # overrides the user cache dir for data.cache_dir = ""
MIN_VOCAB_SIZE = 300  # SentencePiece pieces: the reserved ones plus room for real pieces (data/tokenizer.py)
ON_ERROR = ("raise", "skip")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def user_cache_dir() -> str:
    """Where prepared data goes by default, shared by every workdir of this user on this machine:
    $MUSE_JAX_CACHE_DIR, else $XDG_CACHE_HOME/muse_jax, else ~/.cache/muse_jax."""
    if os.environ.get(CACHE_DIR_ENV):
        return os.environ[CACHE_DIR_ENV]
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                        "muse_jax")


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
    synthetic: SyntheticSettings = SyntheticSettings()  # a generated task instead of the corpus (task "" = the corpus)

    @classmethod
    def from_config(cls, data) -> "DataSettings":
        s = cls(
            manifest=str(data.manifest),
            source_files=tuple(str(p) for p in data.sources),
            out_dir=str(data.out_dir),
            cache_dir=str(data.cache_dir) or user_cache_dir(),
            vocab_size=int(data.vocab_size),
            tokenizer_path=str(data.tokenizer_path),
            tokenizer_sample_lines=int(data.tokenizer_sample_lines),
            val_fraction=float(data.val_fraction),
            normalize_nfkc=bool(data.normalize_nfkc),
            min_chars=int(data.min_chars),
            on_error=str(data.on_error),
            workers=int(data.workers) or available_cores(),
            synthetic=SyntheticSettings.from_config(data),
        )
        s.check()
        return s

    def check(self) -> None:
        """ConfigError naming every bad `data.*` value."""
        problems = []
        if not self.manifest and not self.source_files and not self.synthetic.enabled:
            problems.append("data.manifest or data.sources must name the corpus")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if not self.tokenizer_path and self.vocab_size < MIN_VOCAB_SIZE:
            problems.append(f"data.vocab_size must be at least {MIN_VOCAB_SIZE}, got {self.vocab_size}")
        if self.tokenizer_sample_lines <= 100:  # SentencePiece's own lower bound
            problems.append(f"data.tokenizer_sample_lines must be > 100, got {self.tokenizer_sample_lines}")
        if self.min_chars < 0:
            problems.append(f"data.min_chars must be >= 0, got {self.min_chars}")
        if self.on_error not in ON_ERROR:
            problems.append(f"data.on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.workers < 1:
            problems.append(f"data.workers must be >= 0 (0 = all cores), got {self.workers}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def model_vocab_size(self) -> int:
        """The vocabulary a model is built for before any data is opened: the synthetic task's, else
        `data.vocab_size` (the tokenizer a run would train)."""
        return self.synthetic.vocab_size if self.synthetic.enabled else self.vocab_size
