"""Command line: `python -m muse_jax.main --config configs/tiny_ja.py [--config.a.b=value] [--mode=...]`.

Flags only; the work is done in `muse_jax.train.loop`. The config is locked: an unknown key or a
value of the wrong type is a flag error (one line, exit status 1).
"""

import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from muse_jax.data.errors import DataError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.", lock_config=True)
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "generate", "dry_run", "prepare"], "What to do with the config.")
_PROMPT = flags.DEFINE_string("prompt", "日本語の", "Prompt for --mode=generate and the end-of-training sample.")
flags.mark_flag_as_required("config")


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with every bad flag reported as one line and exit status 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e))
    except (AttributeError, KeyError) as e:  # ml_collections: an override names no existing key
        text = str(e)
        missing = re.search(r"(\w+)", text).group(1)
        hint = re.search(r'Did you mean "(\w+)"', text)
        overrides = [a[2:].split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        key = next((o[len("config."):] for o in overrides if o.split(".")[-1] == missing), missing)
        fail(f"unknown config key '{key}'" + (f" (did you mean '{hint.group(1)}'?)" if hint else ""))


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        cfg = _CONFIG.value
        cfg.workdir  # ml_collections defers a load failure to the first access
    except Exception as e:  # the config file itself: missing, or failing to import
        fail(f"cannot load config {flags.FLAGS['config'].config_filename!r}: {str(e).strip().splitlines()[-1].strip()}")
    logging.set_verbosity(logging.WARNING)  # orbax / XLA info lines would drown the progress line
    if _MODE.value == "prepare":  # data only: JAX is never imported
        from muse_jax.data.prepared import run_prepare

        run_prepare(cfg.data, cfg.workdir)
        return
    from muse_jax.train import loop  # after the config loads: bad input fails fast, before JAX loads

    if _MODE.value == "train":
        loop.train(cfg, _PROMPT.value)
    elif _MODE.value == "dry_run":
        from muse_jax.train.dry_run import dry_run

        if not dry_run(cfg)["fits"]:
            sys.exit(1)
    elif _MODE.value == "eval":
        loop.evaluate_checkpoint(cfg)
    else:
        loop.generate_from_checkpoint(cfg, _PROMPT.value)


def run() -> None:
    try:
        app.run(main, flags_parser=parse_flags)
    except KeyboardInterrupt:
        sys.exit(130)
    except DataError as e:  # bad or missing input data: one line naming file, line and byte offset
        fail(str(e))


if __name__ == "__main__":
    run()
