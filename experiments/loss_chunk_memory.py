"""What the chunked loss (`train.loss_chunk_tokens`) saves: the compiled memory of one train step
with the whole logits and with the head run in slices, for both model kinds.

    python -m experiments.loss_chunk_memory                 # → results/loss_chunk_memory.json

configs/tiny_ja.py at d_model 256, 2 layers, batch 8 × 512 tokens, vocab 32768 (the logits of a
step: 4096 × 32768 float32 = 0.5 GiB, and the backward pass keeps them and their softmax). Each
(model kind, loss_chunk_tokens) is compiled, not run, with the dry run's `compiled_memory`
(muse_jax/train/dry_run.py): XLA's temporaries and the device peak = arguments + outputs +
temporaries − aliases. A loss_chunk_tokens ≥ the step's tokens is one slice: only the
rematerialisation. On CPU the numbers are XLA's CPU compile (`backend` in the JSON).
"""

import argparse

from configs import tiny_ja
from experiments.provenance import write_json
from muse_jax.settings import Settings
from muse_jax.train.dry_run import GIB, compiled_memory
from muse_jax.train.precision import Precision
from muse_jax.train.state import TrainSetup

SHAPE = {"d_model": 256, "n_layers": 2, "batch_size": 8, "seq_len": 512, "vocab_size": 32768}


def measure(kind: str, chunk_tokens: int, compute_dtype: str) -> dict:
    cfg = tiny_ja.get_config()
    cfg.model.kind, cfg.model.d_model, cfg.model.n_layers = kind, SHAPE["d_model"], SHAPE["n_layers"]
    cfg.train.batch_size, cfg.train.seq_len = SHAPE["batch_size"], SHAPE["seq_len"]
    cfg.data.vocab_size = SHAPE["vocab_size"]
    cfg.train.loss_chunk_tokens, cfg.train.compute_dtype = chunk_tokens, compute_dtype
    settings = Settings.from_config(cfg)
    t = settings.train
    xla = compiled_memory(TrainSetup(settings, SHAPE["vocab_size"]), t.batch_size, t.seq_len)
    return {"model.kind": kind, "loss_chunk_tokens": chunk_tokens,
            "compute_dtype": Precision.of(t).compute_dtype.name,
            "temp_bytes": xla["temp_bytes"], "device_peak_bytes": xla["device_peak_bytes"],
            "temp_gib": xla["temp_bytes"] / GIB, "device_peak_gib": xla["device_peak_bytes"] / GIB}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.loss_chunk_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", default="bk,transformer")
    p.add_argument("--chunks", default="0,4096,1024,256", help="comma-separated train.loss_chunk_tokens (0 = whole)")
    p.add_argument("--compute-dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    p.add_argument("--out", default="results/loss_chunk_memory.json")
    args = p.parse_args()
    rows = []
    for kind in args.kinds.split(","):
        for chunk in (int(c) for c in args.chunks.split(",")):
            rows.append(measure(kind, chunk, args.compute_dtype))
            r = rows[-1]
            print(f"{kind:12s} loss_chunk_tokens {chunk:6d} ({r['compute_dtype']}): temporaries {r['temp_gib']:.3f} GiB,"
                  f" device peak {r['device_peak_gib']:.3f} GiB", flush=True)
    whole = {r["model.kind"]: r["device_peak_bytes"] for r in rows if r["loss_chunk_tokens"] == 0}
    for r in rows:
        if r["model.kind"] in whole:
            r["peak_vs_whole"] = r["device_peak_bytes"] / whole[r["model.kind"]]
    logits = SHAPE["batch_size"] * SHAPE["seq_len"] * SHAPE["vocab_size"] * 4
    write_json(args.out, {"shape": SHAPE, "whole_logits_float32_bytes": logits,
                          "rows": rows})


if __name__ == "__main__":
    main()
