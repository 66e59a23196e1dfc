"""Training throughput: ResNet-BK (model.kind=bk) vs the Transformer baseline at equal width and
depth.  Writes results/bench_throughput.{json,png}.

    python -m experiments.bench_throughput                  # N = 512 .. 16k, d_model 64, 2 layers
    python -m experiments.bench_throughput --lengths 512,2048 --d-model 128 --layers 4

Both models come from configs/tiny_ja.py's model section with the same d_model, n_layers,
ffn_mult, vocabulary and embedding; only model.kind differs (bk: model.bk.channels resolvent
channels, scan impl model.bk.scan_impl; transformer: --heads heads of causal attention through
jax.nn.dot_product_attention).  The step is a plain jitted train step -- next-token cross
entropy, jax.value_and_grad, optax.adamw, parameters and optimizer state donated -- so the
measurement does not depend on the project's train loop.  Every step sees --tokens tokens
(batch = tokens / N), so tokens/s are comparable across N.

Per N and model: compiled memory of the step (XLA memory_analysis: arguments + outputs +
temporaries - aliased; peak_memory_in_bytes where present, which on CPU counts little more than
the arguments), then the minimum step time over --reps back-to-back repetitions after one
warm-up step.  A model whose compiled step needs more than --max-gb is not run (recorded as
skipped, with its memory); where the Transformer was skipped the summary gives a lower bound
on the BK / Transformer ratio from the longest N it ran at.
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments.compiled_memory import compiled_memory
from experiments.figures import finish, pyplot
from experiments.model_shape import add_model_shape_args, model_settings
from experiments.provenance import peak_rss_mb, write_json
from muse_jax.model.bk_scan import auto_impl
from muse_jax.model.lm import LanguageModel, count_params


def build_step(kind: str, args):
    """(jitted step, params, opt_state, n_params) for a fresh model of `kind`."""
    model = LanguageModel(model_settings(kind, args, scan_impl=args.scan_impl), args.vocab, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adamw(1e-3, b1=0.9, b2=0.95, weight_decay=0.1)
    opt_state = tx.init(params)

    def loss_fn(params, tokens):
        logits = nnx.merge(graphdef, params, rest)(tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    def step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1)), params, opt_state, count_params(params)


def bench_length(n: int, args) -> dict:
    batch = max(1, args.tokens // n)
    tokens = jnp.asarray(np.random.default_rng(n).integers(0, args.vocab, (batch, n + 1), dtype=np.int32))
    live = {}
    row = {"n": n, "batch": batch, "tokens_per_step": batch * n, "models": {}}
    for kind in ("bk", "transformer"):
        step, params, opt_state, n_params = build_step(kind, args)
        mem = compiled_memory(step.lower(params, opt_state, tokens).compile())
        entry = {"params": n_params, "memory": mem}
        row["models"][kind] = entry
        if mem["total_bytes"] > args.max_gb * 2**30:
            entry["skipped"] = f"compiled step needs {mem['total_bytes'] / 2**30:.1f} GiB > --max-gb={args.max_gb}"
            print(f"  N={n:6d} {kind:11s} skipped: {entry['skipped']}", flush=True)
            continue
        t0 = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, tokens)
        jax.block_until_ready(loss)
        entry["compile_and_first_step_s"] = time.perf_counter() - t0
        entry["first_loss"] = float(loss)
        live[kind] = [step, params, opt_state]
        print(f"  N={n:6d} {kind:11s} params {n_params:,}  memory {mem['total_bytes'] / 2**20:9.1f} MiB  "
              f"compile+first step {entry['compile_and_first_step_s']:.1f}s", flush=True)
    # Each model's repetitions back to back, not interleaved: a step right after the other
    # model's (up to 8 GiB freed and re-faulted) measured up to 2x slower for BK at N >= 4k.
    best = {kind: float("inf") for kind in live}
    for kind, state in live.items():
        for _ in range(args.reps):
            step, params, opt_state = state
            t = time.perf_counter()
            params, opt_state, loss = step(params, opt_state, tokens)
            jax.block_until_ready(loss)
            best[kind] = min(best[kind], time.perf_counter() - t)
            state[1], state[2] = params, opt_state
    for kind, t in best.items():
        row["models"][kind]["step_s"] = t
        row["models"][kind]["tokens_per_s"] = batch * n / t
        print(f"  N={n:6d} {kind:11s} {t * 1e3:9.1f} ms/step  {batch * n / t:10.0f} tokens/s", flush=True)
    if len(best) == 2:
        row["bk_over_transformer_tokens_per_s"] = best["transformer"] / best["bk"]
        print(f"  N={n:6d} BK / Transformer tokens/s = {row['bk_over_transformer_tokens_per_s']:.2f}", flush=True)
    return row


def plot(payload, path):
    plt = pyplot()
    runs = payload["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind in ("bk", "transformer"):
        pts = [(r["n"], r["models"][kind]) for r in runs if "tokens_per_s" in r["models"][kind]]
        axes[0].plot([p[0] for p in pts], [p[1]["tokens_per_s"] for p in pts], marker="o", label=kind)
        mem = [(r["n"], r["models"][kind]["memory"]["total_bytes"] / 2**20, "skipped" in r["models"][kind])
               for r in runs]
        line, = axes[1].plot([m[0] for m in mem], [m[1] for m in mem], marker="o", label=kind)
        skipped = [m for m in mem if m[2]]
        if skipped:
            axes[1].plot([m[0] for m in skipped], [m[1] for m in skipped], "x", ms=12, color=line.get_color(),
                         label=f"{kind}: compiled, not run (> --max-gb)")
    c = payload["config"]
    axes[0].set(xscale="log", yscale="log", xlabel="sequence length N", ylabel="training tokens / s",
                title=f"d_model={c['d_model']}, {c['layers']} layers, {c['tokens_per_step']} tokens/step "
                      f"({payload['backend']})")
    axes[1].set(xscale="log", yscale="log", xlabel="sequence length N", ylabel="compiled step memory (MiB)",
                title="arguments + outputs + temporaries (XLA)")
    finish(fig, axes, path)


def main():
    p = argparse.ArgumentParser(prog="python -m experiments.bench_throughput", description=__doc__.split("\n")[0])
    add_model_shape_args(p, d_model=64, layers=2, channels=32)
    p.add_argument("--tokens", type=int, default=16384, help="tokens per step (batch = tokens / N)")
    p.add_argument("--scan-impl", default="auto")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--max-gb", type=float, default=8.0)
    p.add_argument("--out", default="results/bench_throughput.json")
    args = p.parse_args()

    load_start = os.getloadavg()
    runs = [bench_length(int(n), args) for n in args.lengths.split(",")]
    config = {"d_model": args.d_model, "layers": args.layers, "heads": args.heads, "bk_channels": args.channels,
              "scan_impl": args.scan_impl, "scan_impl_resolved": auto_impl() if args.scan_impl == "auto"
              else args.scan_impl, "vocab": args.vocab, "tokens_per_step": args.tokens, "reps": args.reps,
              "optimizer": "optax.adamw(1e-3, b1=0.9, b2=0.95, weight_decay=0.1)",
              "load_average_start": load_start, "load_average_end": os.getloadavg()}
    summary = {str(r["n"]): r.get("bk_over_transformer_tokens_per_s") for r in runs}
    # Where the Transformer was not run (memory), bound its tokens/s by the longest N it ran at:
    # attention's cost per token grows with N and everything else is per token, so its tokens/s
    # cannot rise with N.  BK tokens/s over that bound is a lower bound on the ratio.
    lower = {}
    for r in runs:
        ran = [q for q in runs if q["n"] <= r["n"] and "tokens_per_s" in q["models"]["transformer"]]
        if "tokens_per_s" not in r["models"]["transformer"] and ran and "tokens_per_s" in r["models"]["bk"]:
            ref = max(ran, key=lambda q: q["n"])
            lower[str(r["n"])] = {"ratio_at_least": r["models"]["bk"]["tokens_per_s"]
                                  / ref["models"]["transformer"]["tokens_per_s"],
                                  "transformer_tokens_per_s_at_most": ref["models"]["transformer"]["tokens_per_s"],
                                  "bound_from_n": ref["n"]}
    mem = {r["n"]: r["models"]["bk"]["memory"]["total_bytes"] for r in runs}
    payload = {"config": config, "summary": {"bk_over_transformer_tokens_per_s": summary,
                                             "bk_over_transformer_lower_bound_where_not_run": lower,
                                             "targets": {"2048": 1.0, "16384": 3.0}},
               "runs": runs, "peak_rss_mb": peak_rss_mb()}
    if 4096 in mem and 65536 in mem:
        payload["summary"]["bk_memory_64k_over_4k"] = mem[65536] / mem[4096]
    write_json(args.out, payload)
    plot({**payload, "backend": jax.default_backend()}, os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out} and {os.path.splitext(args.out)[0]}.png")


if __name__ == "__main__":
    main()
