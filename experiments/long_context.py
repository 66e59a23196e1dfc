"""What a linear-time model does with a long context: in-context recall and length extrapolation,
ResNet-BK vs the RoPE Transformer at matched parameters (configs/long_context_ja.py).

    python -m experiments.long_context             # the CPU study, sized for < 45 min on 2 cores
    python -m experiments.long_context --quick     # a 2-minute smoke run (to workdirs/, not results/)
    python -m experiments.long_context --preset gpu

Three studies (docs/long_context.md), each a training run per model and seed, evaluated afterwards
at every point of a grid (`--mode=eval` in this process: `evaluate_variants`, the checkpoint
restored once per run):
  mqar     multi-query associative recall trained at train.seq_len = 64 with 4 pairs (vocab 32),
           for each width (d_model 64: 48 channels, 128: 96); accuracy on the answers at each
           eval length × number of pairs (the queries sit further from their pairs as the
           window grows: longer windows are also length extrapolation)
  passkey  5 digits hidden at a random depth of random filler, d_model 64, trained at 64;
           accuracy at each eval length × fixed depth
  text     the demo corpus at train.seq_len 64; validation loss on the same 14,336 targets in
           windows of 1×, 4× and 16× that length, by position (16 buckets)
For a seed, both models see the same data in the same order.

Writes --out (default results/long_context): runs.jsonl (a row per run with its evaluations,
appended as runs finish: the study resumes), summary.json (mean ± sd over seeds; text: the paired
difference bk − transformer), table.md, recall.png, extrapolation.png.
"""

import argparse
import dataclasses
import importlib
import json
import os

from experiments.long_context_report import plot_extrapolation, plot_recall, summarize, table
from experiments.provenance import write_json
from experiments.sweep import ROOT, RunSpec, read_jsonl, run_sweep, stored_params

CONFIG = "configs/long_context_ja.py"
MODELS = {
    "bk": (("model.kind", "bk"),),
    "transformer": (("model.kind", "transformer"),),
    "bk+semiseparable": (("model.kind", "bk"), ("model.bk.semiseparable", True)),  # +6 % parameters
}
TEXT_BATCH, TEXT_EVAL_BATCHES = 16, 14  # 14 × 16 × 64 = 14,336 of the demo validation split's 15,285 tokens
BUCKETS = 16


@dataclasses.dataclass(frozen=True)
class Preset:
    widths: tuple[int, ...]  # d_model of the MQAR study (passkey and text: the first)
    seeds: tuple[int, ...]
    steps: int  # optimizer steps of every run (batch 32 × 64 tokens; text 16 × 64)
    lengths: tuple[int, ...]  # eval windows of the recall studies (the first = train.seq_len)
    pairs: tuple[int, ...]  # MQAR eval pairs
    depths: tuple[float, ...]  # passkey eval depths
    factors: tuple[int, ...]  # text eval windows, × train.seq_len


PRESETS = {
    "quick": Preset((64,), (0,), 20, (64, 256), (2, 4), (0.0, 1.0), (1, 4)),
    "cpu": Preset((64, 128), (0, 1, 2), 500, (64, 256, 1024), (1, 2, 4, 8), (0.0, 0.5, 1.0), (1, 4, 16)),
    "gpu": Preset((64, 128, 256), (0, 1, 2), 5000, (64, 256, 1024, 4096), (1, 2, 4, 8), (0.0, 0.25, 0.5, 0.75, 1.0),
                  (1, 4, 16, 64)),
}


def channels(width: int) -> int:
    """3d/4 resolvent channels: 4·d·C + d² = 4·d², the parameters of an attention layer."""
    return 3 * width // 4


def specs(preset: Preset, models: list[str]) -> list[RunSpec]:
    fixed = (("train.steps", preset.steps), ("train.eval_every", preset.steps),
             ("train.checkpoint_every", preset.steps), ("train.log_every", max(1, preset.steps // 6)),
             ("optim.warmup_steps", min(50, preset.steps // 5)))
    out = []
    for seed in preset.seeds:  # seed-major: a partial study covers every model
        for model in models:
            base = (*MODELS[model], ("seed", seed), *fixed)
            for width in preset.widths:
                out.append(RunSpec(f"mqar/d{width}/{model}/seed{seed}", CONFIG, (
                    *base, ("model.d_model", width), ("model.bk.channels", channels(width)),
                    ("data.synthetic", "mqar"))))
            out.append(RunSpec(f"passkey/{model}/seed{seed}", CONFIG, (*base, ("data.synthetic", "passkey"))))
            out.append(RunSpec(f"text/{model}/seed{seed}", CONFIG, (
                *base, ("train.batch_size", TEXT_BATCH), ("train.eval_batches", TEXT_EVAL_BATCHES))))
    return out


def eval_points(spec: RunSpec, preset: Preset) -> list[tuple[tuple[str, object], ...]]:
    """The overrides of each evaluation of a run."""
    study = spec.name.split("/")[0]
    if study == "mqar":
        return [(("eval.seq_len", n), ("data.mqar.num_pairs", p)) for n in preset.lengths for p in preset.pairs]
    if study == "passkey":
        return [(("eval.seq_len", n), ("data.passkey.depth", d)) for n in preset.lengths for d in preset.depths]
    return [(("eval.seq_len", f * preset.lengths[0]),) for f in preset.factors]


def config_of(spec: RunSpec, workdir: str, data_cache: str, point=()):
    """The run's config as its command line builds it, plus an evaluation point's overrides."""
    module = importlib.import_module(spec.config.removesuffix(".py").replace("/", "."))
    cfg = module.get_config()
    cfg.lock()  # as on the command line: an unknown key is an error
    for key, value in (*spec.overrides, ("workdir", workdir), ("data.cache_dir", data_cache),
                       ("eval.position_buckets", BUCKETS), *point):
        *sections, name = key.split(".")
        node = cfg
        for section in sections:
            node = node[section]
        node[name] = value
    return cfg


def row_of(spec: RunSpec, metrics: list[dict]) -> dict:
    study, *rest = spec.name.split("/")
    final = [r for r in metrics if "val_loss" in r][-1]
    return {"study": study, "model": rest[-2], "width": int(rest[0][1:]) if study == "mqar" else None,
            "seed": int(rest[-1].removeprefix("seed")), "params": stored_params(metrics),
            "final_train_loss": [r["loss"] for r in metrics if "loss" in r][-1], "val_loss": final["val_loss"],
            "val_accuracy": final.get("val_accuracy")}


def evaluations(preset: Preset, data_cache: str):
    """The `after` hook of the sweep: every evaluation point of a finished run."""
    def after(spec: RunSpec, workdir: str) -> dict:
        from muse_jax.modes.evaluate import evaluate_variants
        from muse_jax.settings import Settings

        points = eval_points(spec, preset)
        results = evaluate_variants([Settings.from_config(config_of(spec, workdir, data_cache, p)) for p in points])
        return {"preset": dataclasses.asdict(preset),
                "evals": [{**{k: v for k, v in p}, **r} for p, r in zip(points, results)]}
    return after


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.long_context", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="cpu")
    p.add_argument("--quick", action="store_true", help="--preset quick, written under workdirs/")
    p.add_argument("--models", default="bk,transformer", help="comma-separated subset of " + ",".join(MODELS))
    p.add_argument("--out", default="", help="default results/long_context (--quick: workdirs/long_context_quick)")
    p.add_argument("--workdir", default=os.path.join(ROOT, "workdirs", "long_context"), help="run workdirs")
    args = p.parse_args()
    name = "quick" if args.quick else args.preset
    preset = PRESETS[name]
    default_out = os.path.join(ROOT, "workdirs", "long_context_quick") if args.quick else os.path.join(
        ROOT, "results", "long_context")
    out = args.out or default_out
    models = args.models.split(",")
    if any(m not in MODELS for m in models):
        raise SystemExit(f"error: --models must be a subset of {list(MODELS)}, got {models}")
    runs_path = os.path.join(out, "runs.jsonl")
    if any(r["preset"] != json.loads(json.dumps(dataclasses.asdict(preset))) for r in read_jsonl(runs_path)):
        raise SystemExit(f"error: {runs_path} holds runs of another preset; use another --out")
    data_cache = os.path.join(args.workdir, "data")
    rows = run_sweep(specs(preset, models), runs_path, os.path.join(args.workdir, name), data_cache, row_of,
                     echo=False, after=evaluations(preset, data_cache))
    base = config_of(specs(preset, models)[0], "", "")
    summary = summarize(rows, dataclasses.asdict(preset), CONFIG, base.train.seq_len, base.data.mqar.num_pairs)
    write_json(os.path.join(out, "summary.json"), summary)
    text = table(summary)
    with open(os.path.join(out, "table.md.tmp"), "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(os.path.join(out, "table.md.tmp"), os.path.join(out, "table.md"))
    plot_recall(summary, os.path.join(out, "recall.png"))
    plot_extrapolation(summary, os.path.join(out, "extrapolation.png"))
    print(text)


if __name__ == "__main__":
    main()
