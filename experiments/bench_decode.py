"""Decoding cost per token vs context length: ResNet-BK (recurrent state) vs the Transformer (KV
cache).  Writes results/bench_decode.{json,png}.

    python -m experiments.bench_decode                      # contexts 512 .. 16k, d_model 128, 4 layers
    python -m experiments.bench_decode --lengths 512,8192 --steps 100

Both models come from configs/tiny_ja.py's model section with the same d_model, n_layers,
ffn_mult, vocabulary and embedding; only model.kind differs.  Per context length L and model,
batch 1: the prompt (L random tokens) is prefilled with `LanguageModel.prefill` (parallel form;
the Transformer's KV cache has room for L + warm-up + timed steps), then `decode_step` runs
--warmup untimed and --steps timed steps, each its own call of the one jitted step (decode one
token, pick the greedy next token) with the cache donated, timed from dispatch to the token
being ready.  The timed steps are taken in --rounds rounds that visit every length in turn (each
length keeps its own cache), so a change of load on the machine reaches every length alike.
Reported: median, 10th and 90th percentile per-token latency; the prefill's wall time; the
bytes of the decode cache (BK: every layer's recurrent state; Transformer: K and V of every
layer); XLA's compiled memory of the decode step (memory_analysis: arguments + outputs +
temporaries − aliased).  A prefill whose compiled memory exceeds --max-gb is not run (recorded as skipped).
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.compiled_memory import compiled_memory
from experiments.figures import finish, pyplot
from experiments.model_shape import add_model_shape_args, model_settings
from muse_jax.model.bk_scan import auto_impl
from muse_jax.model.lm import LanguageModel, count_params
from muse_jax.provenance import peak_rss_mb, write_json

KINDS = ("bk", "transformer")


def compiled_bytes(lowered) -> int:
    return compiled_memory(lowered.compile())["total_bytes"]


class Decoder:
    """Jitted prefill and greedy decode step of one fresh model."""

    def __init__(self, kind: str, args):
        model = LanguageModel(model_settings(kind, args), args.vocab, rngs=nnx.Rngs(0))
        self.graphdef, self.params = nnx.split(model)
        self.n_params = count_params(self.params)
        self.prefill = jax.jit(self._prefill, static_argnames=("max_len",))
        self.step = jax.jit(self._step, donate_argnums=(1,))

    def _prefill(self, params, tokens, max_len: int):
        logits, cache = nnx.merge(self.graphdef, params).prefill(tokens, max_len)
        return jnp.argmax(logits, -1).astype(jnp.int32), cache

    def _step(self, params, cache, token):
        logits, cache = nnx.merge(self.graphdef, params).decode_step(token, cache)
        return jnp.argmax(logits, -1).astype(jnp.int32), cache


def prepare(decoder: Decoder, n: int, args) -> tuple[dict, list | None]:
    """(entry, [token, cache] after prefilling n tokens and --warmup decode steps, or None if skipped)."""
    max_len = n + args.warmup + args.steps
    tokens = jnp.asarray(np.random.default_rng(n).integers(4, args.vocab, (1, n), dtype=np.int32))
    entry = {"prefill_compiled_bytes": compiled_bytes(decoder.prefill.lower(decoder.params, tokens, max_len=max_len))}
    if entry["prefill_compiled_bytes"] > args.max_gb * 2**30:
        entry["skipped"] = f"prefill needs {entry['prefill_compiled_bytes'] / 2**30:.1f} GiB > --max-gb={args.max_gb}"
        return entry, None
    t = time.perf_counter()
    token, cache = decoder.prefill(decoder.params, tokens, max_len=max_len)
    jax.block_until_ready(token)
    entry["prefill_s"] = time.perf_counter() - t  # wall time of the first call
    entry["cache_bytes"] = int(sum(x.nbytes for x in jax.tree.leaves(cache["layers"])))
    entry["decode_compiled_bytes"] = compiled_bytes(decoder.step.lower(decoder.params, cache, token))
    for _ in range(args.warmup):
        token, cache = decoder.step(decoder.params, cache, token)
    jax.block_until_ready(token)
    return entry, [token, cache]


def time_steps(decoder: Decoder, state: list, n_steps: int) -> list[float]:
    """Seconds of each of n_steps decode steps, dispatch to next token ready; advances state."""
    times = []
    for _ in range(n_steps):
        t = time.perf_counter()
        state[0], state[1] = decoder.step(decoder.params, state[1], state[0])
        jax.block_until_ready(state[0])
        times.append(time.perf_counter() - t)
    return times


def bench_model(decoder: Decoder, lengths: list[int], args) -> dict[int, dict]:
    """Every context length of one model; the timed steps in --rounds rounds that visit every
    length in turn, so a change in machine load (other processes) reaches all lengths alike."""
    entries, states = {}, {}
    for n in lengths:
        entries[n], state = prepare(decoder, n, args)
        if state is not None:
            states[n] = state
    times = {n: [] for n in states}
    per_round = -(-args.steps // args.rounds)
    for r in range(args.rounds):
        for n, state in states.items():
            times[n] += time_steps(decoder, state, min(per_round, args.steps - r * per_round))
    for n, t in times.items():
        ms = np.asarray(t) * 1e3
        entries[n].update(latency_ms_median=float(np.median(ms)), latency_ms_p10=float(np.percentile(ms, 10)),
                          latency_ms_p90=float(np.percentile(ms, 90)), tokens_per_s=float(1e3 / np.median(ms)),
                          timed_steps=len(t))
    return entries


def plot(payload, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind in KINDS:
        rows = [(r["context"], r["models"][kind]) for r in payload["runs"] if "latency_ms_median" in r["models"][kind]]
        x = [n for n, _ in rows]
        med = np.array([e["latency_ms_median"] for _, e in rows])
        err = [med - [e["latency_ms_p10"] for _, e in rows], [e["latency_ms_p90"] for _, e in rows] - med]
        axes[0].errorbar(x, med, yerr=err, marker="o", capsize=3, label=kind)
        axes[1].plot(x, [e["cache_bytes"] / 2**20 for _, e in rows], marker="o", label=f"{kind}: decode cache")
        axes[1].plot(x, [e["decode_compiled_bytes"] / 2**20 for _, e in rows], marker="x", ls="--",
                     label=f"{kind}: compiled decode step")
    c = payload["config"]
    axes[0].set(xscale="log", yscale="log", xlabel="context length", ylabel="ms per token (median, p10-p90)",
                title=f"decode latency, d_model={c['d_model']}, {c['layers']} layers, batch 1 "
                      f"({payload['backend']})")
    axes[1].set(xscale="log", yscale="log", xlabel="context length", ylabel="MiB", title="decode memory")
    finish(fig, axes, path)


def main():
    p = argparse.ArgumentParser(prog="python -m experiments.bench_decode", description=__doc__.split("\n")[0])
    add_model_shape_args(p, d_model=128, layers=4, channels=64)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--steps", type=int, default=500, help="timed decode steps per context length")
    p.add_argument("--rounds", type=int, default=10, help="the timed steps are split into this many rounds")
    p.add_argument("--max-gb", type=float, default=8.0)
    p.add_argument("--out", default="results/bench_decode.json")
    args = p.parse_args()

    load_start = os.getloadavg()
    lengths = [int(n) for n in args.lengths.split(",")]
    runs = [{"context": n, "models": {}} for n in lengths]
    params = {}
    for kind in KINDS:  # each model's lengths back to back
        decoder = Decoder(kind, args)
        params[kind] = decoder.n_params
        entries = bench_model(decoder, lengths, args)
        for row in runs:
            entry = row["models"][kind] = entries[row["context"]]
            print(f"  L={row['context']:6d} {kind:11s} " + (entry.get("skipped") or
                  f"{entry['latency_ms_median']:7.2f} ms/token (p10 {entry['latency_ms_p10']:.2f}, "
                  f"p90 {entry['latency_ms_p90']:.2f})  cache {entry['cache_bytes'] / 2**10:10.1f} KiB"), flush=True)

    def ratio(kind, long, short=512):
        got = {r["context"]: r["models"][kind].get("latency_ms_median") for r in runs}
        return got[long] / got[short] if got.get(long) and got.get(short) else None

    summary = {f"{kind}_latency_{n}_over_512": ratio(kind, n) for kind in KINDS for n in lengths if n != 512}
    summary["target_bk_latency_8192_over_512_at_most"] = 1.2
    config = {"d_model": args.d_model, "layers": args.layers, "heads": args.heads, "bk_channels": args.channels,
              "scan_impl_resolved": auto_impl(), "vocab": args.vocab, "batch": 1, "warmup_steps": args.warmup,
              "timed_steps": args.steps, "rounds": args.rounds, "params": params, "load_average_start": load_start,
              "load_average_end": os.getloadavg()}
    payload = {"config": config, "summary": summary, "runs": runs, "peak_rss_mb": peak_rss_mb()}
    write_json(args.out, payload)
    plot({**payload, "backend": jax.default_backend()}, os.path.splitext(args.out)[0] + ".png")
    print({k: v for k, v in summary.items() if "8192" in k})
    print(f"wrote {args.out} and {os.path.splitext(args.out)[0]}.png")


if __name__ == "__main__":
    main()
