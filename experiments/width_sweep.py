"""Width sweep: does the best learning rate stay put as the model widens? (issue 16)

    python -m experiments.width_sweep                       # μP and the standard parametrisation
    python -m experiments.width_sweep --widths 128,256 --lrs 0.002,0.004 --out /tmp/ws   # a smaller one

ResNet-BK, 2 layers, configs/tiny_ja.py otherwise (demo corpus, 16 × 128 tokens per step, AdamW,
warmup 50 and cosine), the same data order and the same number of tokens at every width; the
base learning rate `optim.adamw.lr` swept on a grid for every `model.d_model` in --widths, under
  mup   optim.lr_base_width = 128: hidden matrices at lr · 128 / d_model (muse_jax/optim/width_scaling.py)
  sp    optim.lr_base_width = 0: every parameter at lr (the standard parametrisation)
(the α/D read-out and the embedding multiplier are the configs' own in both; at d_model = 128 the
two are the same runs, made once under mup). One validation at
the end (7 batches, 14,336 of the demo validation tokens). Writes --out/runs.jsonl (one row per
run, appended as it finishes: the sweep resumes), summary.json (per parametrisation and width:
the loss at every lr and the best lr) and plot.png (loss against lr, a line per width).
"""

import argparse
import os

from experiments.figures import finish, pyplot
from experiments.provenance import write_json
from experiments.sweep import ROOT, RunSpec, eval_rows, run_sweep, steps_for_tokens, stored_params

CONFIG = "configs/tiny_ja.py"
TOKENS_PER_STEP = 16 * 128
BASE_WIDTH = 128
PARAMETRISATIONS = {"mup": BASE_WIDTH, "sp": 0}  # → optim.lr_base_width


def spec(parametrisation: str, width: int, lr: float, steps: int) -> RunSpec:
    return RunSpec(f"{parametrisation}_d{width}_lr{lr:g}", CONFIG, (
        ("model.d_model", width), ("model.n_layers", 2), ("optim.adamw.lr", lr),
        ("optim.lr_base_width", PARAMETRISATIONS[parametrisation]), ("train.steps", steps),
        ("train.eval_every", steps), ("train.checkpoint_every", steps), ("train.log_every", steps),
        ("train.eval_batches", 7), ("sample.max_new_tokens", 1)))


def row_of(spec: RunSpec, metrics: list[dict]) -> dict:
    settings = dict(spec.overrides)
    final = eval_rows(metrics)[-1]
    return {"parametrisation": next(p for p, w in PARAMETRISATIONS.items() if w == settings["optim.lr_base_width"]),
            "d_model": settings["model.d_model"], "lr": settings["optim.adamw.lr"], "step": final["step"],
            "params": stored_params(metrics), "val_loss": final["val_loss"]}


def summarize(rows: list[dict], tokens: int) -> dict:
    """Per parametrisation and width: loss at every lr, the best lr, and how far the best lr
    moves from the narrowest to the widest model (a factor; 1 = it stays put)."""
    if any(r["parametrisation"] == "sp" for r in rows):  # at the base width sp is mup: the same runs
        rows = rows + [{**r, "parametrisation": "sp"} for r in rows
                       if r["parametrisation"] == "mup" and r["d_model"] == BASE_WIDTH]
    out = {}
    for p in sorted({r["parametrisation"] for r in rows}):
        widths = {}
        for w in sorted({r["d_model"] for r in rows if r["parametrisation"] == p}):
            runs = sorted((r for r in rows if r["parametrisation"] == p and r["d_model"] == w), key=lambda r: r["lr"])
            best = min(runs, key=lambda r: r["val_loss"])
            widths[str(w)] = {"params": runs[0]["params"], "lrs": [r["lr"] for r in runs],
                              "val_loss": [r["val_loss"] for r in runs], "best_lr": best["lr"],
                              "best_val_loss": best["val_loss"]}
        best_lrs = [v["best_lr"] for v in widths.values()]
        out[p] = {"widths": widths, "best_lr_widest_over_narrowest": best_lrs[-1] / best_lrs[0]}
    return {"tokens_per_run": tokens, "config": CONFIG, "n_layers": 2, "base_width": BASE_WIDTH,
            "parametrisations": out,
            "note": "val_loss: nats/token on 14,336 validation tokens of the demo corpus after tokens_per_run "
                    "training tokens; lr is optim.adamw.lr (the base rate; under mup hidden matrices train at "
                    "lr * 128 / d_model)."}


def plot(summary: dict, path: str) -> None:
    plt = pyplot()
    params = summary["parametrisations"]
    fig, axes = plt.subplots(1, len(params), figsize=(5.5 * len(params), 4), sharey=True, squeeze=False)
    for ax, (p, entry) in zip(axes[0], params.items()):
        for w, v in entry["widths"].items():
            (line,) = ax.plot(v["lrs"], v["val_loss"], "o-", label=f"d_model {w}")
            ax.plot([v["best_lr"]], [v["best_val_loss"]], "*", ms=14, color=line.get_color())
        ax.set_xscale("log", base=2)
        ax.set_xlabel("optim.adamw.lr (base)")
        ax.set_title({"mup": f"μP (hidden lr × {BASE_WIDTH}/d_model)", "sp": "standard (one lr)"}.get(p, p))
    axes[0][0].set_ylabel(f"validation loss after {summary['tokens_per_run']:,} tokens")
    finish(fig, axes[0], path)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.width_sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="64,128,256,512")
    p.add_argument("--lrs", default="0.001,0.002,0.004,0.008,0.016")
    p.add_argument("--parametrisations", default="mup,sp")
    p.add_argument("--tokens", type=int, default=400_000, help="training tokens per run")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "width_sweep"))
    p.add_argument("--workdir", default=os.path.join(ROOT, "workdirs", "width_sweep"), help="run workdirs")
    args = p.parse_args()
    params = args.parametrisations.split(",")
    if unknown := set(params) - set(PARAMETRISATIONS):
        raise SystemExit(f"error: unknown parametrisation(s) {sorted(unknown)}; known: {list(PARAMETRISATIONS)}")
    steps = steps_for_tokens(args.tokens, TOKENS_PER_STEP)
    widths = [int(w) for w in args.widths.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    specs = [spec(p, w, lr, steps) for p in params for w in widths for lr in lrs
             if not (p == "sp" and w == BASE_WIDTH and "mup" in params)]
    rows = run_sweep(specs, os.path.join(args.out, "runs.jsonl"), os.path.join(args.workdir, f"{steps}steps"),
                     os.path.join(args.workdir, "data"), row_of)
    summary = summarize(rows, steps * TOKENS_PER_STEP)
    write_json(os.path.join(args.out, "summary.json"), summary)
    plot(summary, os.path.join(args.out, "plot.png"))
    for p, entry in summary["parametrisations"].items():
        best = {w: v["best_lr"] for w, v in entry["widths"].items()}
        print(f"{p}: best lr by width {best} (widest / narrowest: {entry['best_lr_widest_over_narrowest']:g})")


if __name__ == "__main__":
    main()
