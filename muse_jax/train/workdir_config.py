"""A workdir's config history, and the check that a new start trains the same model on the same data.

Every start of `--mode=train` writes the config as given to `workdir/configs/start-<step>.json`
(the step it starts from: 0 for a new run, the checkpoint's step for a resumed one) and to
`workdir/config.json` (the latest start). Before anything is prepared or written, every mode that
reads the workdir's checkpoints compares the new config with config.json, once the workdir holds a
checkpoint: the keys of `FIXED_KEYS` — the model, the data it was trained on and what the
checkpoint holds — must be equal (`train.ema_decay`: on or off). Everything else (run length,
logging, evaluation, learning rates, sampling, the mesh, where data is cached) may change between
starts. JAX-free, so `python -m muse_jax.main` runs it before any work.
"""

import dataclasses
import json
import os
from typing import Any, Callable

from muse_jax.settings import BKSettings, ModelSettings

CONFIG_FILE = "config.json"
HISTORY_DIR = "configs"


def _section_keys(prefix: str, cls, skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(f"{prefix}.{f.name}" for f in dataclasses.fields(cls) if f.name not in skip)


# model.*: every key but the nested section and the scan implementation (the same numbers, by test)
MODEL_KEYS = _section_keys("model", ModelSettings, skip=("bk",)) + _section_keys("model.bk", BKSettings,
                                                                                  skip=("scan_impl",))
# data.*: the corpus and what shapes its tokens; not workers, on_error, out_dir, cache_dir (how and where)
DATA_KEYS = ("data.manifest", "data.sources", "data.tokenizer_path", "data.vocab_size",
             "data.tokenizer_sample_lines", "data.val_fraction", "data.normalize_nfkc", "data.min_chars",
             "data.synthetic", "data.mqar.vocab_size", "data.passkey.vocab_size")  # a task's other keys: eval may vary them
# what the checkpoint holds: stored weights' dtype, the EMA, the optimizer's state
STATE_KEYS = ("train.param_dtype", "train.ema_decay", "optim.name", "optim.aligner.enabled", "optim.tsp.enabled")
FIXED_KEYS = MODEL_KEYS + DATA_KEYS + STATE_KEYS


def _file_text(path: Any) -> Any:
    """A manifest compares by its text, so a moved clone (another absolute path to the same file)
    is the same run; a path that no longer exists cannot be compared (None: skipped)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, TypeError, ValueError):
        return None


COMPARED_AS: dict[str, Callable[[Any], Any]] = {  # default: the value itself
    "train.ema_decay": lambda decay: decay > 0,
    "data.manifest": lambda path: _file_text(path) if path else "",
}


class WorkdirMismatch(Exception):
    """The config differs from the workdir's in a key of FIXED_KEYS (one line, exit status 2)."""


def flat(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(saved: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(key, saved value, new value) for every key of FIXED_KEYS in both nested configs that differs."""
    saved, new = flat(saved), flat(new)
    out = []
    for key in FIXED_KEYS:
        if key in saved and key in new:
            same_as = COMPARED_AS.get(key, lambda v: v)
            before, now = same_as(saved[key]), same_as(new[key])
            if before is not None and now is not None and before != now:
                out.append((key, saved[key], new[key]))
    return out


def has_checkpoint(workdir: str) -> bool:
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def check_same_run(workdir: str, config_json: str) -> None:
    """WorkdirMismatch naming every key of FIXED_KEYS whose value in `config_json` (the new
    config) differs from the workdir's config.json, when the workdir holds a checkpoint."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not (os.path.isfile(path) and has_checkpoint(workdir)):
        return
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise WorkdirMismatch(f"{path}: cannot read the workdir's config ({e})") from None
    found = differences(saved, json.loads(config_json))
    if found:
        described = "; ".join(f"{key} is {old!r} there, {new!r} now" for key, old, new in found)
        raise WorkdirMismatch(f"workdir {workdir} holds a run of another model or data ({path}): {described}. "
                              "Use another workdir, or set the value back")


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def record_start(workdir: str, start: int, config_json: str) -> str:
    """Writes the config of a start from step `start` to configs/start-<start>.json and config.json;
    returns the history file's path."""
    history = os.path.join(workdir, HISTORY_DIR)
    os.makedirs(history, exist_ok=True)
    path = os.path.join(history, f"start-{start:07d}.json")
    _write_atomically(path, config_json)
    _write_atomically(os.path.join(workdir, CONFIG_FILE), config_json)
    return path
