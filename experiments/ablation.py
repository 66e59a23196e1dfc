"""The ablation study: what each mathematical component does to held-out loss.

    python -m experiments.ablation                     # 8 variants × 5 seeds, ≈ 400k tokens each
    python -m experiments.ablation --seeds 2 --tokens 100000 --out /tmp/abl   # a quick look

Variants (overrides of configs/ablation_ja.py, whose base is ResNet-BK with every component off):
  none            LAP off (Im z free), linspace energies, one gated MLP, Euclidean embedding
  +prime_bump     Re z_c at the quantiles of the Prime-Bump potential
  +lap_stability  Im z_c = η + softplus(ρ_c) ≥ η = 0.05
  +scattering     the FFN as 3 experts of hidden width d chosen by the phase of G_ii — the same
                  parameters and FLOPs as the single MLP of hidden width 3d it replaces
  +semiseparable  values also mixed by the full causal resolvent (+6.5 % parameters)
  +hyperbolic     Poincaré-ball tied embedding
  all             all five above
  transformer     the causal RoPE Transformer at matched parameters (within 0.2 %)
For a given seed every variant sees the same data in the same order and starts from the same
seed; the difference to `none` is therefore paired by seed. Each run ends with one validation
on the first 14,336 of the demo corpus' 15,285 validation tokens (7 batches × 16 × 128, 94 % of
the split), and with --eval a.txt,b.txt one evaluation of the final checkpoint on each of those
UTF-8 text files (`--mode=eval --eval_file`: each file one document, every window), e.g. text of
another domain than the training data.

Writes to --out (default results/ablation): runs.jsonl (one row per run, appended as runs
finish: the sweep resumes where it stopped), summary.json (mean ± sd per variant, paired
difference to `none` with its 95 % t interval), table.md, plot.png. The original project's
published numbers are shown beside ours, labelled as its unverified claims (they were generated,
not measured).
"""

import argparse
import os

from experiments.figures import pyplot, save_figure
from experiments.provenance import write_json
from experiments.stats import mean, paired_difference, sample_sd
from experiments.sweep import (ROOT, RunSpec, eval_rows, evaluate_on_file, read_jsonl, run_sweep,
                               steps_for_tokens, stored_params)

CONFIG = "configs/ablation_ja.py"
TOKENS_PER_STEP = 16 * 128  # configs/ablation_ja.py: batch_size × seq_len

COMPONENTS = {
    "+prime_bump": (("model.bk.prime_bump", True),),
    "+lap_stability": (("model.bk.lap_eta", 0.05),),
    "+scattering": (("model.router", "scattering"), ("model.n_experts", 3), ("model.ffn_mult", 1)),
    "+semiseparable": (("model.bk.semiseparable", True),),
    "+hyperbolic": (("model.embedding", "hyperbolic"),),
}
VARIANTS = {
    "none": (),
    **COMPONENTS,
    "all": tuple(kv for overrides in COMPONENTS.values() for kv in overrides),
    "transformer": (("model.kind", "transformer"),),
}
# The original project's published perplexities (README of Project MUSE): generated mock data,
# never measured. Shown for comparison only.
ORIGINAL_CLAIMED_PPL = {"none": 44.09, "+prime_bump": 36.78, "+lap_stability": 32.50, "+scattering": 29.51,
                        "+semiseparable": 27.63, "all": 24.15}


def specs(variants: list[str], seeds: int, steps: int) -> list[RunSpec]:
    return [RunSpec(f"{v}/seed{s}", CONFIG, (*VARIANTS[v], ("seed", s), ("train.steps", steps),
                                               ("train.eval_every", steps)))
            for s in range(seeds) for v in variants]  # seed-major: a partial sweep covers every variant


def row_of(spec: RunSpec, metrics: list[dict]) -> dict:
    variant, seed = spec.name.split("/seed")
    final = eval_rows(metrics)[-1]
    train_losses = [r["loss"] for r in metrics if "loss" in r]
    return {"variant": variant, "seed": int(seed), "step": int(final["step"]), "val_loss": final["val_loss"],
            "val_ppl": final["val_ppl"], "final_train_loss": train_losses[-1], "params": stored_params(metrics)}


def held_out_losses(files: list[str], data_cache: str):
    """The `after` hook of the sweep: the final checkpoint's loss on each --eval file."""
    def after(spec: RunSpec, workdir: str) -> dict:
        return {"eval_files": {path: evaluate_on_file(spec, workdir, data_cache, os.path.abspath(path))["val_loss"]
                               for path in files}}
    return after


def diff_vs_none(runs: list[dict], none_runs: list[dict], loss) -> dict | None:
    """Paired (by seed) difference of `loss(run)` to that of the `none` run of the same seed."""
    base = {r["seed"]: loss(r) for r in none_runs}
    paired = [(loss(r), base[r["seed"]]) for r in runs if r["seed"] in base]
    return paired_difference([p[0] for p in paired], [p[1] for p in paired]) if len(paired) >= 2 else None


def summarize(rows: list[dict], variants: list[str], tokens: int, eval_files: tuple[str, ...] = ()) -> dict:
    by_variant = {v: sorted((r for r in rows if r["variant"] == v), key=lambda r: r["seed"]) for v in variants}
    none_runs = by_variant.get("none", [])
    summary = {}
    for v, runs in by_variant.items():
        losses = [r["val_loss"] for r in runs]
        entry = {"n_seeds": len(runs), "params": runs[0]["params"], "val_loss_mean": mean(losses),
                 "val_loss_sd": sample_sd(losses), "val_ppl_mean": mean([r["val_ppl"] for r in runs]),
                 "val_losses": losses}
        if v != "none" and (d := diff_vs_none(runs, none_runs, lambda r: r["val_loss"])):
            entry["diff_vs_none"] = d
        for path in eval_files:
            file_losses = [r["eval_files"][path] for r in runs]
            e = {"loss_mean": mean(file_losses), "loss_sd": sample_sd(file_losses), "losses": file_losses}
            if v != "none" and (d := diff_vs_none(runs, none_runs, lambda r: r["eval_files"][path])):
                e["diff_vs_none"] = d
            entry.setdefault("eval_files", {})[path] = e
        if v in ORIGINAL_CLAIMED_PPL:
            entry["original_claimed_ppl_unverified"] = ORIGINAL_CLAIMED_PPL[v]
        summary[v] = entry
    return {"tokens_per_run": tokens, "config": CONFIG, "eval_files": list(eval_files), "variants": summary,
            "note": "val_loss is nats/token on the first 14,336 validation tokens of the demo corpus; diff_vs_none "
                    "is paired by seed (negative = better than none); original_claimed_ppl_unverified are the "
                    "original project's published numbers, generated rather than measured."}


def verdict(diff: dict | None) -> str:
    if diff is None:
        return ""
    if diff["ci_high"] < 0:
        return "better"
    if diff["ci_low"] > 0:
        return "worse"
    return "no clear difference"


def delta_text(d: dict | None) -> str:
    return f"{d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]" if d else "—"


def table(summary: dict) -> str:
    lines = [f"Ablation, {summary['tokens_per_run']:,} training tokens per run, {CONFIG}; val_loss in nats/token "
             "(lower is better); Δ = paired difference to `none` with its 95 % t interval.", "",
             "| variant | params | seeds | val_loss mean ± sd | val ppl | Δ vs none [95 % CI] | verdict | original's claimed ppl (unverified) |",
             "|---|---:|---:|---|---:|---|---|---:|"]
    for v, e in summary["variants"].items():
        d = e.get("diff_vs_none")
        claim = e.get("original_claimed_ppl_unverified")
        lines.append(f"| {v} | {e['params']:,} | {e['n_seeds']} | {e['val_loss_mean']:.4f} ± {e['val_loss_sd']:.4f} | "
                     f"{e['val_ppl_mean']:.1f} | {delta_text(d)} | {verdict(d)} | {claim if claim else '—'} |")
    for path in summary.get("eval_files", []):
        lines += ["", f"Held-out file `{path}` (`--eval`): loss of the final checkpoint, nats/token.", "",
                  "| variant | loss mean ± sd | Δ vs none [95 % CI] | verdict |", "|---|---|---|---|"]
        for v, e in summary["variants"].items():
            f = e["eval_files"][path]
            d = f.get("diff_vs_none")
            lines.append(f"| {v} | {f['loss_mean']:.4f} ± {f['loss_sd']:.4f} | {delta_text(d)} | {verdict(d)} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: str) -> None:
    plt = pyplot()
    names = list(summary["variants"])
    means = [summary["variants"][v]["val_loss_mean"] for v in names]
    sds = [summary["variants"][v]["val_loss_sd"] for v in names]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(names, means, yerr=sds, capsize=4, color=["#888" if v in ("none", "transformer") else "#4a7" for v in names])
    low = min(m - s for m, s in zip(means, sds))
    ax.set_ylim(low - 0.05 * abs(low), max(m + s for m, s in zip(means, sds)) + 0.02 * abs(low))
    ax.set_ylabel("validation loss (nats/token), mean ± sd over seeds")
    ax.set_title(f"Ablation: {summary['tokens_per_run']:,} tokens per run")
    plt.xticks(rotation=20)
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--tokens", type=int, default=400_000, help="training tokens per run")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--out", default=os.path.join(ROOT, "results", "ablation"))
    p.add_argument("--workdir", default=os.path.join(ROOT, "workdirs", "ablation"), help="run workdirs (checkpoints)")
    p.add_argument("--eval", default="", help="comma-separated UTF-8 text files to evaluate every final checkpoint on")
    args = p.parse_args()
    eval_files = tuple(f for f in args.eval.split(",") if f)  # as given: the keys of runs.jsonl and summary
    missing = [f for f in eval_files if not os.path.isfile(f)]
    if missing:
        raise SystemExit(f"error: --eval file(s) not found: {missing}")
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    steps = steps_for_tokens(args.tokens, TOKENS_PER_STEP)
    tokens = steps * TOKENS_PER_STEP
    runs_path = os.path.join(args.out, "runs.jsonl")
    done = read_jsonl(runs_path)
    other = {r["step"] for r in done} - {steps}
    if other:
        raise SystemExit(f"error: {runs_path} holds runs of {sorted(other)} steps, not {steps}; use another --out")
    if any(set(eval_files) - set(r.get("eval_files", {})) for r in done):
        raise SystemExit(f"error: runs in {runs_path} were not evaluated on every --eval file; use another --out")
    data_cache = os.path.join(args.workdir, "data")
    rows = run_sweep(specs(variants, args.seeds, steps), runs_path, os.path.join(args.workdir, f"{steps}steps"),
                     data_cache, row_of, after=held_out_losses(list(eval_files), data_cache) if eval_files else None)
    summary = summarize(rows, variants, tokens, eval_files)
    write_json(os.path.join(args.out, "summary.json"), summary)
    with open(os.path.join(args.out, "table.md.tmp"), "w", encoding="utf-8") as f:
        f.write(table(summary))
    os.replace(os.path.join(args.out, "table.md.tmp"), os.path.join(args.out, "table.md"))
    plot(summary, os.path.join(args.out, "plot.png"))
    print(table(summary))


if __name__ == "__main__":
    main()
