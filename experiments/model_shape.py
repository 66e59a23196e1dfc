"""The model-shape flags bench_decode.py, bench_throughput.py and step_memory.py share, and the
model settings built from them (configs/tiny_ja.py's model section with that shape)."""

import argparse

from configs import tiny_ja
from muse_jax.settings import ModelSettings

DEFAULT_LENGTHS = "512,1024,2048,4096,8192,16384"


def add_model_shape_args(parser: argparse.ArgumentParser, *, d_model: int, layers: int, channels: int,
                         heads: int = 2, vocab: int = 4096, lengths: str = DEFAULT_LENGTHS) -> None:
    """--lengths, --d-model, --layers, --heads, --channels and --vocab, with these defaults."""
    parser.add_argument("--lengths", default=lengths)
    parser.add_argument("--d-model", type=int, default=d_model)
    parser.add_argument("--layers", type=int, default=layers)
    parser.add_argument("--heads", type=int, default=heads)
    parser.add_argument("--channels", type=int, default=channels, help="model.bk.channels")
    parser.add_argument("--vocab", type=int, default=vocab)


def set_model_shape(cfg, kind: str, args) -> None:
    """Set model.kind = kind and the shape from add_model_shape_args' flags in a config's model
    section `cfg` (in place)."""
    cfg.kind = kind
    cfg.d_model = args.d_model
    cfg.n_layers = args.layers
    cfg.n_heads = args.heads
    cfg.bk.channels = args.channels


def model_settings(kind: str, args, **bk) -> ModelSettings:
    """tiny_ja's model section with model.kind = kind, the shape from add_model_shape_args' flags
    and the `model.bk.*` keys in `bk`."""
    cfg = tiny_ja.get_config().model
    set_model_shape(cfg, kind, args)
    for key, value in bk.items():
        cfg.bk[key] = value
    return ModelSettings.from_config(cfg)
