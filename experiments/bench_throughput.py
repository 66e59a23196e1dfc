"""Training throughput: ResNet-BK (model.kind=bk) vs the Transformer baseline at equal width and
depth.  Writes results/bench_throughput.{json,png}.

    python -m experiments.bench_throughput                  # N = 512 .. 16k, d_model 64, 2 layers
    python -m experiments.bench_throughput --lengths 512,2048 --d-model 128 --layers 4
    python -m experiments.bench_throughput --models bk --scan-impl pallas --compute-dtype bfloat16

Both models come from configs/tiny_ja.py's model section with the same d_model, n_layers,
ffn_mult, vocabulary and embedding; only model.kind differs (bk: model.bk.channels resolvent
channels, scan impl model.bk.scan_impl; transformer: --heads heads of causal attention through
jax.nn.dot_product_attention).  The step is a plain jitted train step -- next-token cross
entropy, jax.value_and_grad, optax.adamw, parameters and optimizer state donated -- so the
measurement does not depend on the project's train loop.  Both models run under one precision
policy, the project's (`muse_jax/train/precision.py`): --compute-dtype is train.compute_dtype
(float32 master weights, the castable ones cast to it before the forward pass).  Every step sees
--tokens tokens (batch = tokens / N), so tokens/s are comparable across N.

Per N and model: compiled memory of the step (XLA memory_analysis: arguments + outputs +
temporaries - aliased; peak_memory_in_bytes where present, which on CPU counts little more than
the arguments), then the minimum step time over --reps back-to-back repetitions after one
warm-up step.  A model whose compiled step needs more than --max-gb is not run (recorded as
skipped, with its memory); where the Transformer was skipped the summary gives a lower bound
on the BK / Transformer ratio from the longest N it ran at.  A model whose build, compile or
step fails at a length (any exception, e.g. RESOURCE_EXHAUSTED) gets {"error", "message"} in
that row and the run goes on; the JSON is rewritten after every length.
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from configs import tiny_ja
from experiments.compiled_memory import compiled_memory
from experiments.failure import describe, failure_record
from experiments.figures import finish, pyplot
from experiments.model_shape import add_model_shape_args, model_settings
from experiments.provenance import peak_rss_mb, write_json
from muse_jax.model.bk_scan import auto_impl
from muse_jax.model.lm import LanguageModel, count_params
from muse_jax.model.param_roles import roles
from muse_jax.settings import ConfigError, TrainSettings
from muse_jax.train.precision import Precision, cast_weights

MODELS = ("bk", "transformer")


def compute_dtype_of(name: str):
    """The dtype train.compute_dtype = `name` computes in (checked by the settings layer)."""
    train = tiny_ja.get_config().train
    train.compute_dtype = name
    return Precision.of(TrainSettings.from_config(train)).compute_dtype


def build_step(kind: str, args):
    """(jitted step, params, opt_state, n_params) for a fresh model of `kind`."""
    model = LanguageModel(model_settings(kind, args, scan_impl=args.scan_impl), args.vocab, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, cast_mask, dtype = nnx.to_pure_dict(params), roles(model).cast, compute_dtype_of(args.compute_dtype)
    tx = optax.adamw(1e-3, b1=0.9, b2=0.95, weight_decay=0.1)
    opt_state = tx.init(params)

    def loss_fn(params, tokens):
        logits = nnx.merge(graphdef, cast_weights(params, dtype, cast_mask), rest)(tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    def step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1)), params, opt_state, count_params(params)


def start_model(kind: str, n: int, tokens, args) -> tuple[dict, list | None]:
    """(row, [step, params, opt_state]) after compiling and one step; the state is None when the
    model is skipped (over --max-gb) or failed (the row then holds the failure record and what
    was measured before it)."""
    entry = {}
    try:
        step, params, opt_state, entry["params"] = build_step(kind, args)
        t0 = time.perf_counter()
        step = step.lower(params, opt_state, tokens).compile()  # compiled once: timed and measured
        entry["memory"] = mem = compiled_memory(step)
        if mem["total_bytes"] > args.max_gb * 2**30:
            entry["skipped"] = f"compiled step needs {mem['total_bytes'] / 2**30:.1f} GiB > --max-gb={args.max_gb}"
            print(f"  N={n:6d} {kind:11s} skipped: {entry['skipped']}", flush=True)
            return entry, None
        params, opt_state, loss = step(params, opt_state, tokens)
        jax.block_until_ready(loss)
    except Exception as e:  # noqa: BLE001 -- any failure of this model is recorded, the run goes on
        entry.update(failure_record(e))
        print(f"  N={n:6d} {kind:11s} FAILED: {describe(entry)}", flush=True)
        return entry, None
    entry["compile_and_first_step_s"] = time.perf_counter() - t0
    entry["first_loss"] = float(loss)
    print(f"  N={n:6d} {kind:11s} params {entry['params']:,}  memory {mem['total_bytes'] / 2**20:9.1f} MiB  "
          f"compile+first step {entry['compile_and_first_step_s']:.1f}s", flush=True)
    return entry, [step, params, opt_state]


def bench_length(n: int, args) -> dict:
    batch = max(1, args.tokens // n)
    tokens = jnp.asarray(np.random.default_rng(n).integers(0, args.vocab, (batch, n + 1), dtype=np.int32))
    live = {}
    row = {"n": n, "batch": batch, "tokens_per_step": batch * n, "models": {}}
    for kind in args.models.split(","):
        row["models"][kind], state = start_model(kind, n, tokens, args)
        if state is not None:
            live[kind] = state
    # Each model's repetitions back to back, not interleaved: a step right after the other
    # model's (up to 8 GiB freed and re-faulted) measured up to 2x slower for BK at N >= 4k.
    best = {}
    for kind, state in live.items():
        try:
            for _ in range(args.reps):
                step, params, opt_state = state
                t = time.perf_counter()
                params, opt_state, loss = step(params, opt_state, tokens)
                jax.block_until_ready(loss)
                best[kind] = min(best.get(kind, float("inf")), time.perf_counter() - t)
                state[1], state[2] = params, opt_state
        except Exception as e:  # noqa: BLE001
            row["models"][kind].update(failure_record(e))
            print(f"  N={n:6d} {kind:11s} FAILED: {describe(row['models'][kind])}", flush=True)
            best.pop(kind, None)
    for kind, t in best.items():
        row["models"][kind]["step_s"] = t
        row["models"][kind]["tokens_per_s"] = batch * n / t
        print(f"  N={n:6d} {kind:11s} {t * 1e3:9.1f} ms/step  {batch * n / t:10.0f} tokens/s", flush=True)
    if "bk" in best and "transformer" in best:
        row["bk_over_transformer_tokens_per_s"] = best["transformer"] / best["bk"]
        print(f"  N={n:6d} BK / Transformer tokens/s = {row['bk_over_transformer_tokens_per_s']:.2f}", flush=True)
    return row


def plot(payload, path):
    plt = pyplot()
    runs = payload["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind in payload["config"]["models"]:
        rows = [(r["n"], r["models"][kind]) for r in runs if kind in r["models"]]
        pts = [(n, m) for n, m in rows if "tokens_per_s" in m]
        axes[0].plot([p[0] for p in pts], [p[1]["tokens_per_s"] for p in pts], marker="o", label=kind)
        mem = [(n, m["memory"]["total_bytes"] / 2**20, "skipped" in m) for n, m in rows if "memory" in m]
        line, = axes[1].plot([m[0] for m in mem], [m[1] for m in mem], marker="o", label=kind)
        skipped = [m for m in mem if m[2]]
        if skipped:
            axes[1].plot([m[0] for m in skipped], [m[1] for m in skipped], "x", ms=12, color=line.get_color(),
                         label=f"{kind}: compiled, not run (> --max-gb)")
    c = payload["config"]
    axes[0].set(xscale="log", yscale="log", xlabel="sequence length N", ylabel="training tokens / s",
                title=f"d_model={c['d_model']}, {c['layers']} layers, {c['tokens_per_step']} tokens/step, "
                      f"{c['compute_dtype']} ({payload['backend']})")
    axes[1].set(xscale="log", yscale="log", xlabel="sequence length N", ylabel="compiled step memory (MiB)",
                title="arguments + outputs + temporaries (XLA)")
    finish(fig, axes, path)


def summarize(runs: list[dict]) -> dict:
    """BK / Transformer tokens/s per N, and a lower bound where the Transformer was not run."""
    def tokens_per_s(r, kind):
        return r["models"].get(kind, {}).get("tokens_per_s")

    # Where the Transformer was not run (memory), bound its tokens/s by the longest N it ran at:
    # attention's cost per token grows with N and everything else is per token, so its tokens/s
    # cannot rise with N.  BK tokens/s over that bound is a lower bound on the ratio.
    lower = {}
    for r in runs:
        ran = [q for q in runs if q["n"] <= r["n"] and tokens_per_s(q, "transformer")]
        if not tokens_per_s(r, "transformer") and ran and tokens_per_s(r, "bk"):
            ref = max(ran, key=lambda q: q["n"])
            lower[str(r["n"])] = {"ratio_at_least": tokens_per_s(r, "bk") / tokens_per_s(ref, "transformer"),
                                  "transformer_tokens_per_s_at_most": tokens_per_s(ref, "transformer"),
                                  "bound_from_n": ref["n"]}
    summary = {"bk_over_transformer_tokens_per_s": {str(r["n"]): r.get("bk_over_transformer_tokens_per_s")
                                                    for r in runs},
               "bk_over_transformer_lower_bound_where_not_run": lower,
               "targets": {"2048": 1.0, "16384": 3.0}}
    mem = {r["n"]: r["models"]["bk"]["memory"]["total_bytes"] for r in runs if "memory" in r["models"].get("bk", {})}
    if 4096 in mem and 65536 in mem:
        summary["bk_memory_64k_over_4k"] = mem[65536] / mem[4096]
    return summary


def main():
    p = argparse.ArgumentParser(prog="python -m experiments.bench_throughput", description=__doc__.split("\n")[0])
    add_model_shape_args(p, d_model=64, layers=2, channels=32)
    p.add_argument("--tokens", type=int, default=16384, help="tokens per step (batch = tokens / N)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated, of " + ", ".join(MODELS))
    p.add_argument("--scan-impl", default="auto")
    p.add_argument("--compute-dtype", default="float32", help="train.compute_dtype of both models")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--max-gb", type=float, default=8.0)
    p.add_argument("--out", default="results/bench_throughput.json")
    args = p.parse_args()
    models = args.models.split(",")
    if not set(models) <= set(MODELS):
        p.error(f"--models: each of {', '.join(MODELS)}, got {args.models}")
    try:
        dtype = compute_dtype_of(args.compute_dtype)
        model_settings("bk", args, scan_impl=args.scan_impl)
    except ConfigError as e:
        p.error(str(e))

    config = {"models": models, "d_model": args.d_model, "layers": args.layers, "heads": args.heads,
              "bk_channels": args.channels, "scan_impl": args.scan_impl,
              "scan_impl_resolved": auto_impl() if args.scan_impl == "auto" else args.scan_impl,
              "compute_dtype": args.compute_dtype, "compute_dtype_resolved": jnp.dtype(dtype).name,
              "vocab": args.vocab, "tokens_per_step": args.tokens, "reps": args.reps,
              "optimizer": "optax.adamw(1e-3, b1=0.9, b2=0.95, weight_decay=0.1)",
              "load_average_start": os.getloadavg()}
    runs = []
    for n in args.lengths.split(","):
        runs.append(bench_length(int(n), args))
        config["load_average_end"] = os.getloadavg()
        payload = {"config": config, "summary": summarize(runs), "runs": runs, "peak_rss_mb": peak_rss_mb()}
        write_json(args.out, payload)  # after every length: a later crash keeps what was measured
    plot({**payload, "backend": jax.default_backend()}, os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out} and {os.path.splitext(args.out)[0]}.png")


if __name__ == "__main__":
    main()
