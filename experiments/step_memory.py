"""Compiled memory of the project's own train step, per model, at a fixed number of tokens per
step: the dry run's measurement (`muse_jax/train/dry_run.py`, `compiled_memory`) without its
batch search.  Compiled, never run.  Writes results/step_memory.json (or --out).

    python -m experiments.step_memory --lengths 2048 --tokens 65536 --d-model 512 --layers 4 \
        --heads 8 --channels 64 --vocab 32768 --override train.compute_dtype=bfloat16

Config: configs/tiny_ja.py with the shape of the model-shape flags (data.vocab_size = --vocab),
train.seq_len = N, train.batch_size = tokens / N, then every --override key=value (any config
key, e.g. train.remat_policy=full; the value is a Python literal or else a string).  A model
whose compile fails at a length (any exception, e.g. RESOURCE_EXHAUSTED) gets {"error",
"message"} in that row and the run goes on; the JSON is rewritten after every length.
"""

import argparse
import ast

from configs import tiny_ja
from experiments.failure import describe, failure_record
from experiments.model_shape import add_model_shape_args, set_model_shape
from experiments.provenance import write_json
from muse_jax.settings import ConfigError, Settings
from muse_jax.train.device_memory import GIB
from muse_jax.train.dry_run import compiled_memory
from muse_jax.train.state import TrainSetup

MODELS = ("bk", "transformer")


def parse_override(text: str) -> tuple[str, object]:
    """"a.b=value" -> ("a.b", value): a Python literal (int, float, bool, ...) or else the string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key, raw


def settings_for(kind: str, n: int, args) -> Settings:
    """The run's settings for `kind` at sequence length `n` (see the module docstring)."""
    cfg = tiny_ja.get_config()
    set_model_shape(cfg.model, kind, args)
    cfg.data.vocab_size = args.vocab
    cfg.train.seq_len = n
    cfg.train.batch_size = max(1, args.tokens // n)
    for key, value in args.override:
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node[part] if part in node else None
            if node is None:
                break
        if node is None or leaf not in node:
            raise ConfigError(f"--override {key}: no such config key")
        node[leaf] = value
    return Settings.from_config(cfg)


def measure(kind: str, n: int, args) -> dict:
    """XLA's memory of the train step of `kind` at length `n`, or the failure record."""
    try:
        settings = settings_for(kind, n, args)
        t = settings.train
        xla = compiled_memory(TrainSetup(settings, settings.data.vocab_size), t.batch_size, t.seq_len)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 -- any failure of this model is recorded, the run goes on
        record = failure_record(e)
        print(f"  N={n:6d} {kind:11s} FAILED: {describe(record)}", flush=True)
        return record
    row = {"device_peak_gib": xla["device_peak_bytes"] / GIB, "compute_dtype": t.compute_dtype,
           "xla_memory_analysis": xla}
    print(f"  N={n:6d} {kind:11s} device peak {row['device_peak_gib']:.2f} GiB", flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.step_memory", description=__doc__.split("\n")[0])
    add_model_shape_args(p, d_model=512, layers=4, channels=64, heads=8, vocab=32768, lengths="2048")
    p.add_argument("--tokens", type=int, default=65536, help="tokens per step (batch = tokens / N)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated, of " + ", ".join(MODELS))
    p.add_argument("--override", type=parse_override, action="append", default=[], metavar="KEY=VALUE",
                   help="a config key (repeatable), e.g. train.compute_dtype=bfloat16")
    p.add_argument("--out", default="results/step_memory.json")
    args = p.parse_args()
    models = args.models.split(",")
    if not set(models) <= set(MODELS):
        p.error(f"--models: each of {', '.join(MODELS)}, got {args.models}")
    lengths = [int(n) for n in args.lengths.split(",")]
    try:
        for kind in models:
            settings_for(kind, lengths[0], args)  # every key and value checked before any compile
    except ConfigError as e:
        p.error(str(e))

    config = {"models": models, "d_model": args.d_model, "layers": args.layers, "heads": args.heads,
              "bk_channels": args.channels, "vocab": args.vocab, "tokens_per_step": args.tokens,
              "overrides": {key: value for key, value in args.override}, "base_config": "configs/tiny_ja.py"}
    runs = []
    for n in lengths:
        runs.append({"n": n, "batch_size": max(1, args.tokens // n),
                     "models": {kind: measure(kind, n, args) for kind in models}})
        write_json(args.out, {"config": config, "runs": runs})  # after every length
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
