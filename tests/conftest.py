"""Shared fixtures: a tiny corpus (a slice of the shipped demo corpus) and a tiny config."""

import os

import pytest

from muse_jax.data.demo import DEMO_SOURCES

TINY_CORPUS_BYTES = 150_000


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory) -> None:
    """A persistent XLA cache for the session: a run that compiles the same step again (the
    resumed half of a resume test, a reference run) loads it instead of compiling it."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture(scope="session", autouse=True)
def user_cache_dir(tmp_path_factory) -> str:
    """The user cache dir (data.cache_dir = "") of every test and of the commands they start: a
    temporary folder, never the real ~/.cache/muse_jax."""
    from muse_jax.settings.data import CACHE_DIR_ENV

    path = str(tmp_path_factory.mktemp("user_cache"))
    os.environ[CACHE_DIR_ENV] = path
    return path


@pytest.fixture(scope="session")
def tiny_sources(tmp_path_factory) -> tuple[str, ...]:
    """The first ~150 KB (whole lines) of each demo source, as files of the same kinds."""
    out = tmp_path_factory.mktemp("corpus")
    paths = []
    for src in DEMO_SOURCES:
        lines, size = [], 0
        with open(src, encoding="utf-8") as f:
            for line in f:
                lines.append(line)
                size += len(line.encode())
                if size > TINY_CORPUS_BYTES:
                    break
        dst = out / os.path.basename(src)
        dst.write_text("".join(lines), encoding="utf-8")
        paths.append(str(dst))
    return tuple(paths)


@pytest.fixture(scope="session")
def data_cache_dir(tmp_path_factory) -> str:
    """One token cache for the whole session, so the tokenizer is trained once."""
    return str(tmp_path_factory.mktemp("data_cache"))


@pytest.fixture
def tiny_config(tmp_path, tiny_sources, data_cache_dir):
    """configs/tiny_ja.py shrunk to seconds: width 32, 2 layers, seq 32, batch 4, 8 steps."""
    return make_tiny_config(tmp_path, tiny_sources, data_cache_dir)


def make_tiny_config(tmp_path, tiny_sources, data_cache_dir):
    """The body of `tiny_config`, for fixtures of a wider scope."""
    from configs.tiny_ja import get_config

    c = get_config()
    c.workdir = str(tmp_path / "run")
    c.model.d_model = 32
    c.model.n_layers = 2
    c.model.n_heads = 2
    c.model.bk.channels = 8
    c.data.sources = tiny_sources
    c.data.vocab_size = 1536
    c.data.cache_dir = data_cache_dir
    c.train.steps = 8
    c.train.batch_size = 4
    c.train.seq_len = 32
    c.train.log_every = 1
    c.train.eval_every = 4
    c.train.eval_batches = 2
    c.train.checkpoint_every = 4
    c.optim.warmup_steps = 2
    c.sample.max_new_tokens = 4
    return c
