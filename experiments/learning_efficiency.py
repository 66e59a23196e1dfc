"""Learning efficiency: validation loss against training tokens, ResNet-BK vs the Transformer
baseline at matched parameters (configs/efficiency_ja.py: 1,378,944 vs 1,377,408).

    python -m experiments.learning_efficiency --max-tokens 2000000     # the original's command

For each of --seeds (default 0,1,2), both models train on the same data in the same order (the
seed's) for --max-tokens tokens with the same optimizer and schedule, and are evaluated on the
first 14,336 validation tokens of the demo corpus (7 batches, 94 % of the split) every
--eval-tokens tokens (rounded to whole steps of 16 × 128 tokens). Writes
--out/runs_<steps>steps_every<k>_seed<s>.jsonl (one row per model, appended when it finishes;
an interrupted benchmark resumes from the run's checkpoint), curve.json (mean ± sd curves over
the seeds, the paired difference of the final losses with its 95 % interval, and for a ladder
of losses the tokens each mean curve needed to first reach it), plot.png. 10–17 minutes per
seed on 2 CPU cores.
"""

import argparse
import os

from experiments.figures import pyplot, save_figure
from experiments.provenance import write_json
from experiments.stats import mean, paired_difference, sample_sd
from experiments.sweep import ROOT, RunSpec, eval_rows, run_sweep, steps_for_tokens, stored_params

CONFIG = "configs/efficiency_ja.py"
TOKENS_PER_STEP = 16 * 128  # configs/efficiency_ja.py: batch_size × seq_len
MODELS = ("bk", "transformer")
LOSS_LADDER_STEP = 0.25  # tokens-to-reach is reported at multiples of this loss


def specs(models: list[str], steps: int, eval_every: int, seed: int) -> list[RunSpec]:
    return [RunSpec(kind, CONFIG, (("model.kind", kind), ("seed", seed), ("train.steps", steps),
                                   ("train.eval_every", eval_every), ("train.checkpoint_every", eval_every),
                                   ("train.log_every", eval_every)))
            for kind in models]


def row_of(spec: RunSpec, metrics: list[dict]) -> dict:
    curve = [{"step": int(r["step"]), "tokens": int(r["step"]) * TOKENS_PER_STEP, "val_loss": r["val_loss"]}
             for r in eval_rows(metrics)]
    train = [{"step": int(r["step"]), "loss": r["loss"], "tokens_per_sec": r.get("tokens_per_sec")}
             for r in metrics if "loss" in r]
    return {"model": spec.name, "params": stored_params(metrics), "val_loss": curve[-1]["val_loss"], "curve": curve,
            "train_curve": train}


def tokens_to_reach(curve: list[dict], loss: float) -> int | None:
    """Tokens at the first evaluation with val_loss ≤ loss (None if never reached)."""
    return next((p["tokens"] for p in curve if p["val_loss"] <= loss), None)


def loss_ladder(rows: list[dict]) -> list[float]:
    """Multiples of LOSS_LADDER_STEP from the best final loss up to the worst first evaluation."""
    best = min(min(p["val_loss"] for p in r["curve"]) for r in rows)
    worst = max(r["curve"][0]["val_loss"] for r in rows)
    k_low, k_high = int(-(-best // LOSS_LADDER_STEP)), int(worst // LOSS_LADDER_STEP)
    return [k * LOSS_LADDER_STEP for k in range(k_high, k_low - 1, -1)]


def mean_curve(rows: list[dict]) -> list[dict]:
    """The seeds' curves of one model, point by point: mean and sample sd of val_loss."""
    points = zip(*(r["curve"] for r in rows))
    return [{"step": ps[0]["step"], "tokens": ps[0]["tokens"], "val_loss": mean([p["val_loss"] for p in ps]),
             "val_loss_sd": sample_sd([p["val_loss"] for p in ps]) if len(ps) > 1 else None,
             "val_loss_per_seed": [p["val_loss"] for p in ps]} for ps in points]


def summarize(rows_by_seed: dict[int, list[dict]], max_tokens: int, eval_tokens: int) -> dict:
    """Per model: the mean curve over seeds and the final losses; the paired (same seed, same
    data order) difference bk − transformer of the final loss with its 95 % interval; for a
    ladder of losses, the tokens each model's mean curve needed to first reach it."""
    seeds = sorted(rows_by_seed)
    by_model = {m: [next(r for r in rows_by_seed[s] if r["model"] == m) for s in seeds]
                for m in (r["model"] for r in rows_by_seed[seeds[0]])}
    models = {}
    for name, rows in by_model.items():
        finals = [r["curve"][-1]["val_loss"] for r in rows]
        models[name] = {"params": rows[0]["params"], "final_val_loss": mean(finals),
                        "final_val_loss_sd": sample_sd(finals) if len(finals) > 1 else None,
                        "final_val_loss_per_seed": finals, "curve": mean_curve(rows)}
    reach = []
    for loss in loss_ladder(list(models.values())):
        entry = {"val_loss": loss, **{name: tokens_to_reach(m["curve"], loss) for name, m in models.items()}}
        if all(entry.get(m) for m in MODELS):
            entry["bk_over_transformer"] = entry["bk"] / entry["transformer"]
        reach.append(entry)
    summary = {"config": CONFIG, "max_tokens": max_tokens, "eval_tokens": eval_tokens, "seeds": seeds,
               "models": models, "tokens_to_reach": reach,
               "note": "curves and final losses: mean over seeds (sd: sample standard deviation); "
                       "tokens_to_reach: tokens at the first evaluation whose mean val_loss is at or below the "
                       "loss (resolution: the evaluation interval); null = not reached within max_tokens."}
    if all(m in models for m in MODELS) and len(seeds) > 1:
        summary["final_difference_bk_minus_transformer"] = paired_difference(
            models["bk"]["final_val_loss_per_seed"], models["transformer"]["final_val_loss_per_seed"])
    return summary


def plot(summary: dict, path: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, m in summary["models"].items():
        tokens = [p["tokens"] for p in m["curve"]]
        loss = [p["val_loss"] for p in m["curve"]]
        line, = ax.plot(tokens, loss, marker="o", ms=3, label=f"{name} ({m['params']:,} params)")
        if m["curve"][0]["val_loss_sd"] is not None:
            sd = [p["val_loss_sd"] for p in m["curve"]]
            ax.fill_between(tokens, [x - e for x, e in zip(loss, sd)], [x + e for x, e in zip(loss, sd)],
                            color=line.get_color(), alpha=0.2, lw=0)
    n = len(summary["seeds"])
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"Learning efficiency on the demo corpus (mean{' ± sd' if n > 1 else ''} of {n} seed(s))")
    ax.set_ylim(top=min(ax.get_ylim()[1], 7.5))
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.learning_efficiency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-tokens", type=int, default=2_000_000)
    p.add_argument("--eval-tokens", type=int, default=100_000, help="tokens between validations")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; each is one run per model")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "learning_efficiency"))
    p.add_argument("--workdir", default=os.path.join(ROOT, "workdirs", "learning_efficiency"))
    args = p.parse_args()
    models = args.models.split(",")
    if any(m not in MODELS for m in models):
        raise SystemExit(f"error: --models must be a subset of {MODELS}, got {models}")
    steps = steps_for_tokens(args.max_tokens, TOKENS_PER_STEP)
    eval_every = max(1, round(args.eval_tokens / TOKENS_PER_STEP))
    rows_by_seed = {}
    for seed in (int(x) for x in args.seeds.split(",")):
        tag = f"{steps}steps_every{eval_every}_seed{seed}"  # a different benchmark never resumes this one
        rows_by_seed[seed] = run_sweep(specs(models, steps, eval_every, seed),
                                       os.path.join(args.out, f"runs_{tag}.jsonl"), os.path.join(args.workdir, tag),
                                       os.path.join(args.workdir, "data"), row_of, echo=True)
    summary = summarize(rows_by_seed, steps * TOKENS_PER_STEP, eval_every * TOKENS_PER_STEP)
    write_json(os.path.join(args.out, "curve.json"), summary)
    plot(summary, os.path.join(args.out, "plot.png"))
    for entry in summary["tokens_to_reach"]:
        print(entry)


if __name__ == "__main__":
    main()
