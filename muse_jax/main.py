"""Command line: `python -m muse_jax.main --config configs/tiny_ja.py [--config.a.b=value] [--mode=...]`.

Flags only: the config is read once into `muse_jax.settings.Settings`, which checks every value
before anything is prepared or compiled, and the mode's module in `muse_jax.modes` does the work.
The config is locked: an unknown key or a value of the wrong type is a flag error, and a value
out of range or inconsistent with another (`ConfigError`, raised by the settings) is reported
the same way: one line, exit status 2. `--help` lists the flags and every key of the config with
its default and comment (`muse_jax/config_help.py`), exit status 0.
"""

import os
import re
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from muse_jax.data.errors import DataError
from muse_jax.settings import ConfigError, Settings, UnsupportedBackend
from muse_jax.train.errors import RunError, WriteError
from muse_jax.train.workdir_config import WorkdirMismatch, check_same_run

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.", lock_config=True)
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "generate", "chat", "dry_run", "prepare"],
                          "What to do with the config.")
_PROMPT = flags.DEFINE_string("prompt", "日本語の", "Prompt for --mode=generate and the end-of-training sample.")
_PROMPT_FILE = flags.DEFINE_string("prompt_file", None, "A UTF-8 file whose whole text, as it is (final newline "
                                   "included), is the prompt, instead of --prompt.")
_EVAL_FILE = flags.DEFINE_string("eval_file", None, "For --mode=eval: a UTF-8 text file (one document) to "
                                 "evaluate on, instead of the validation split.")
flags.mark_flag_as_required("config")
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort")
READS_CHECKPOINTS = ("train", "eval", "generate", "chat")  # modes checked against the workdir's config.json


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with every bad flag reported as one line and exit status 2; --help: the
    flags and every config key with its default and comment (`muse_jax/config_help.py`), exit 0."""
    if any(a in HELP_FLAGS for a in argv[1:]):
        from muse_jax.config_help import help_text

        print(help_text(argv, [flags.FLAGS[f.name] for f in (_CONFIG, _MODE, _PROMPT, _PROMPT_FILE, _EVAL_FILE)]))
        sys.exit(0)
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


def fail(message: str, status: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def prompt_text() -> str:
    """--prompt, or the text of --prompt_file (not both)."""
    path = _PROMPT_FILE.value
    if path is None:
        return _PROMPT.value
    if flags.FLAGS["prompt"].present:
        fail("give --prompt or --prompt_file, not both")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read --prompt_file {path!r}: {getattr(e, 'strerror', None) or e}")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        cfg = _CONFIG.value
        cfg.workdir  # ml_collections defers a load failure to the first access
    except Exception as e:  # the config file itself: missing, or failing to import
        fail(f"cannot load config {flags.FLAGS['config'].config_filename!r}: {str(e).strip().splitlines()[-1].strip()}")
    logging.set_verbosity(logging.WARNING)  # orbax / XLA info lines would drown the progress line
    eval_file = _EVAL_FILE.value
    if eval_file is not None and _MODE.value != "eval":
        fail("--eval_file is read by --mode=eval only")
    if eval_file is not None and not os.path.isfile(eval_file):
        fail(f"--eval_file {eval_file!r}: no such file")
    settings = Settings.from_config(cfg)  # every check, before anything is prepared or compiled
    for note in settings.notes:
        print(f"note: {note}", file=sys.stderr)
    if _MODE.value in READS_CHECKPOINTS:
        check_same_run(settings.workdir, cfg.to_json())
    if settings.data.synthetic.enabled and (eval_file is not None or _MODE.value in ("generate", "chat", "prepare")):
        what = "--eval_file" if eval_file is not None else f"--mode={_MODE.value}"
        fail(f"{what} needs the text corpus; data.synthetic={settings.data.synthetic.task!r} is a generated task")
    if _MODE.value == "prepare":  # data only: JAX is never imported
        from muse_jax.data.prepared import run_prepare

        run_prepare(settings.data)
        return
    prompt = prompt_text()
    if _MODE.value == "train":
        from muse_jax.modes.train import train

        train(settings, prompt, cfg.to_json(indent=2))
    elif _MODE.value == "dry_run":
        from muse_jax.train.dry_run import dry_run

        if not dry_run(settings)["fits"]:
            sys.exit(1)
    elif _MODE.value == "eval":
        from muse_jax.modes.evaluate import evaluate_checkpoint

        evaluate_checkpoint(settings, eval_file)
    elif _MODE.value == "chat":
        from muse_jax.modes.chat import chat

        chat(settings)
    else:
        from muse_jax.modes.generate import generate_from_checkpoint

        generate_from_checkpoint(settings, prompt)


def exit_on_sigterm(signum, frame) -> None:
    """SIGTERM outside the train loop (which saves first, `train/preemption.py`): exit 143 through
    Python's exception handling, so that temporary files and worker processes are cleaned up."""
    sys.exit(128 + signum)


def run() -> None:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        app.run(main, flags_parser=parse_flags)
    except KeyboardInterrupt:
        sys.exit(130)
    except (DataError, ConfigError, UnsupportedBackend, WorkdirMismatch) as e:  # bad input data (file, line,
        fail(str(e))  # byte), config value (key), a value this backend cannot run (key), a workdir of another model
    except WriteError as e:  # disk full, read-only: one line naming the path; exit at once, since
        print(f"error: {e}", file=sys.stderr, flush=True)  # Orbax's writer threads would print pages
        sys.stdout.flush()                                  # of tracebacks at interpreter shutdown
        os._exit(e.exit_code)
    except RunError as e:  # no checkpoint, diverged, workdir busy, interrupted: README "Fault tolerance"
        fail(str(e), e.exit_code)
    except OSError as e:  # any other file that cannot be read or written
        if e.filename is None:
            raise
        fail(f"{e.filename}: {e.strerror}", 1)


def console_script() -> None:
    """`muse-jax` (pyproject.toml): `python -m muse_jax.main`, which also puts the working directory
    first on sys.path, so that configs importing `configs.*` load from the repository root."""
    sys.path.insert(0, os.getcwd())
    run()


if __name__ == "__main__":
    run()
