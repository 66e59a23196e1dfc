"""The search behind configs/dense_8gb.py: the device peak of one training step for a grid of
widths × depths of the uncompressed ResNet-BK, everything else as in that config.

    python -m experiments.dense_8gb_search                      # → results/dense_8gb_search.json

Each shape is compiled (not run) with the dry run's `compiled_memory` (muse_jax/train/dry_run.py):
the device peak is the larger of the forward/backward phase and the update phase. The config
picks the largest stored parameter count whose peak fits `hardware.device_memory_gb`.
About a minute of compilation per shape on 2 CPU cores.
"""

import argparse

from configs import dense_8gb
from experiments.provenance import provenance, write_json
from muse_jax.model.param_count import parameter_counts
from muse_jax.settings import Settings
from muse_jax.train.dry_run import GIB, compiled_memory
from muse_jax.train.state import TrainSetup

SHAPES = "2560x2,2560x3,2048x4,2048x5,1792x6,1792x7,1536x8,1536x9,1280x12,1280x13,1024x20,1024x21"


def measure(d_model: int, n_layers: int) -> dict:
    cfg = dense_8gb.get_config()
    cfg.model.d_model, cfg.model.n_layers = d_model, n_layers
    settings = Settings.from_config(cfg)
    vocab, t = settings.data.vocab_size, settings.train
    xla = compiled_memory(TrainSetup(settings, vocab), t.batch_size, t.seq_len)
    budget = settings.hardware.device_memory_gb * GIB
    stored = parameter_counts(settings.model, vocab)["stored"]
    return {"d_model": d_model, "n_layers": n_layers, "params_stored": stored,
            "device_peak_gib": xla["device_peak_bytes"] / GIB,
            "forward_backward_gib": xla["phases"]["forward_backward_bytes"] / GIB,
            "update_gib": xla["phases"]["update_bytes"] / GIB,
            "update_bytes_per_param": xla["phases"]["update_bytes"] / stored,
            "fits": xla["device_peak_bytes"] <= budget}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.dense_8gb_search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=SHAPES, help="comma-separated d_model x n_layers")
    p.add_argument("--out", default="results/dense_8gb_search.json")
    args = p.parse_args()
    rows = []
    for shape in args.shapes.split(","):
        d_model, n_layers = (int(x) for x in shape.split("x"))
        rows.append(measure(d_model, n_layers))
        r = rows[-1]
        print(f"{d_model:5d} × {n_layers:2d}  {r['params_stored'] / 1e6:7.1f} M  peak {r['device_peak_gib']:.2f} GiB "
              f"(fwd/bwd {r['forward_backward_gib']:.2f}, update {r['update_gib']:.2f}; "
              f"{r['update_bytes_per_param']:.1f} B/param) {'fits' if r['fits'] else 'too big'}", flush=True)
    fitting = [r for r in rows if r["fits"]]
    best = max(fitting, key=lambda r: r["params_stored"]) if fitting else None
    write_json(args.out, {"provenance": provenance(), "config": "configs/dense_8gb.py",
                          "device_memory_gib": float(dense_8gb.get_config().hardware.device_memory_gb),
                          "shapes": rows, "largest_that_fits": best})
    print("largest that fits:", best and f"{best['d_model']} × {best['n_layers']} ({best['params_stored']:,})")


if __name__ == "__main__":
    main()
