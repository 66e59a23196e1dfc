"""A grid of training runs over config overrides, with one validation at the end of each.

    python -m experiments.grid --out results/readout_sweep --steps 400 \\
        --grid model.output_mult=4,11.3137 --grid optim.embed_lr_mult=1,4,16,32,64

Every combination of the --grid values is one run of `python -m muse_jax.main --config <--config>`
with those overrides (plus --set overrides shared by all), trained for --steps steps and
validated at the end (and at the half, for a look at the trend), the training loss logged every
--log-every steps. Writes --out/runs.jsonl (a row per run, appended as it finishes: the grid
resumes; with the first logged loss, the training curve and the skipped steps), summary.json
and table.md (runs sorted by the final validation loss).
"""

import argparse
import itertools
import os

from experiments.provenance import write_json
from experiments.sweep import ROOT, RunSpec, eval_rows, run_sweep, stored_params


def parse_assignment(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise SystemExit(f"error: expected key=value[,value...], got {text!r}")
    return key, values.split(",")


def specs(config: str, grid: list[tuple[str, list[str]]], shared: list[tuple[str, str]], steps: int,
          log_every: int) -> list[RunSpec]:
    half = max(1, steps // 2)
    fixed = (*shared, ("train.steps", steps), ("train.eval_every", half), ("train.checkpoint_every", steps),
             ("train.log_every", log_every))
    out = []
    for values in itertools.product(*(v for _, v in grid)):
        chosen = tuple((k, v) for (k, _), v in zip(grid, values))
        out.append(RunSpec("_".join(f"{k.split('.')[-1]}={v}" for k, v in chosen), config, (*chosen, *fixed)))
    return out


def row_of(spec: RunSpec, metrics: list[dict]) -> dict:
    evals = eval_rows(metrics)
    train = [r for r in metrics if "loss" in r]
    return {"overrides": {k: v for k, v in spec.overrides}, "params": stored_params(metrics),
            "val_loss": evals[-1]["val_loss"], "step": evals[-1]["step"],
            "curve": [{"step": r["step"], "val_loss": r["val_loss"]} for r in evals],
            "first_logged_loss": {"step": train[0]["step"], "loss": train[0]["loss"]},
            "skipped_steps": max(r["skipped_steps"] for r in train),
            "train_curve": [{"step": r["step"], "loss": r["loss"], "tokens_per_sec": r["tokens_per_sec"]}
                            for r in train]}


def table(rows: list[dict], keys: list[str]) -> str:
    halfway = "val_loss at half"
    lines = [f"| {' | '.join(keys)} | first logged loss | skipped steps | {halfway} | final val_loss |",
             "|" + "---|" * (len(keys) + 4)]
    for r in sorted(rows, key=lambda r: r["val_loss"]):
        values = " | ".join(str(r["overrides"][k]) for k in keys)
        first = r["first_logged_loss"]
        lines.append(f"| {values} | {first['loss']:.3f} (step {first['step']}) | {r['skipped_steps']:.0f} | "
                     f"{r['curve'][0]['val_loss']:.4f} | {r['val_loss']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.grid", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/tiny_ja.py")
    p.add_argument("--grid", action="append", required=True, help="key=v1,v2,...; repeat for more keys")
    p.add_argument("--set", action="append", default=[], help="key=value shared by every run")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--log-every", type=int, default=0, help="train.log_every (default: half the steps)")
    p.add_argument("--out", required=True)
    p.add_argument("--workdir", default=os.path.join(ROOT, "workdirs", "grid"), help="run workdirs")
    args = p.parse_args()
    grid = [parse_assignment(g) for g in args.grid]
    shared = []
    for s in args.set:
        key, values = parse_assignment(s)
        shared.append((key, ",".join(values)))
    name = os.path.basename(os.path.normpath(args.out))
    rows = run_sweep(specs(args.config, grid, shared, args.steps, args.log_every or max(1, args.steps // 2)), os.path.join(args.out, "runs.jsonl"),
                     os.path.join(args.workdir, name), os.path.join(args.workdir, "data"), row_of)
    keys = [k for k, _ in grid]
    write_json(os.path.join(args.out, "summary.json"),
               {"config": args.config, "steps": args.steps, "grid": dict(grid), "shared": dict(shared),
                "runs": sorted(({k: r[k] for k in ("overrides", "val_loss", "curve", "first_logged_loss",
                                                   "skipped_steps")} for r in rows), key=lambda r: r["val_loss"])})
    text = table(rows, keys)
    tmp = os.path.join(args.out, "table.md.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, os.path.join(args.out, "table.md"))
    print(text)


if __name__ == "__main__":
    main()
