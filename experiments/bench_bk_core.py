"""BK core benchmark: fwd+bwd time and compiled memory per impl against a same-run memory copy,
plus the precision table at the issue's numerical range.  Writes results/bench_bk_core.{json,png}.

    python -m experiments.bench_bk_core                       # B=2, C=64, N = 1k .. 64k, CPU
    python -m experiments.bench_bk_core --batch 8 --channels 64 --lengths 1024,4096

What is timed: the BK core's whole training interface, one jitted VJP
    (a, kappa, z, gbar) -> (g, abar, kappabar, zbar),
a, kappa real [B, C, N], z [C, 1], gbar complex [B, C, N].  The inputs are made the way
BKMixer makes them: [B, N, C] activations swapped to [B, C, N] inside the jitted function
(XLA cancels that transpose against the impl's own layout); `--layout contiguous` passes
[B, C, N] arrays instead.

The copy baseline, timed in the same run and interleaved with the impls: one jitted pass that
reads the same input bytes (a, kappa, gbar: 16 B per position and channel) and writes the same
output bytes into arrays of the same sizes as (g, abar, kappabar) (x -> x + 1, fused by XLA).
Every time is the minimum over --reps interleaved repetitions (the machine may be shared);
the load average is recorded.  Ratios are only meaningful within one run.

Memory: XLA's compiled memory_analysis() of the jitted VJP: arguments + outputs + temporaries
- aliased (what that one call needs at its peak, bytes); peak_memory_in_bytes where present.

Bytes per position (of B x C x N): `memory_bytes_per_position` (that compiled memory) and
`residual_bytes_per_position`: what the VJP stores between its forward and backward pass (the
leaves of the jax.vjp closure, from an abstract trace; inputs it keeps count).

Impls: the public ones (`sequential`, `chunked`, `associative`, `pallas` -- the Pallas kernels,
interpreted on CPU, so not in the CPU default), `compensated` (sequential with compensated=True:
the cost of exact float32 outputs), and the references kept for the "custom rule vs plain
autodiff" decision: `sequential_autodiff` (plain autodiff through a complex lax.scan) and
`associative_autodiff` (plain autodiff through the matrix scan).

Surviving failures: an impl whose compile, memory or run fails at a length (any exception,
e.g. RESOURCE_EXHAUSTED) gets {"error", "message"} in that row and is not run at longer lengths
(nor is one over --max-compile-s); the JSON is rewritten after every length.
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.compiled_memory import compiled_memory
from experiments.failure import describe, failure_record
from experiments.figures import finish, pyplot
from experiments.provenance import peak_rss_mb, write_json
from muse_jax.model import bk_scan
from muse_jax.model.bk_core import causal_resolvent_diag, prepare_inputs

REFERENCE_IMPLS = ("sequential_autodiff", "associative_autodiff")
PUBLIC_IMPLS = ("sequential", "chunked", "associative", "pallas")


def resolvent_fn(impl: str):
    """g(a, kappa, z) for a public impl, ``compensated`` (sequential in double-float) or a
    reference (same preparation as the public API)."""
    if impl == "compensated":
        return lambda a, k, z: causal_resolvent_diag(a, k, z, impl="sequential", compensated=True)
    if impl not in REFERENCE_IMPLS:
        return lambda a, k, z: causal_resolvent_diag(a, k, z, impl=impl)

    def reference(a, k, z):
        a_, k_, z_ = prepare_inputs(a, k, z)
        d = a_.astype(z_.dtype) - z_[..., None]
        if impl == "sequential_autodiff":
            return bk_scan.sequential_autodiff(d, k_)
        return bk_scan.matrix_scan_ratio(d, k_.astype(d.dtype))  # no custom JVP

    return reference


def layout_fn(impl: str, layout: str):
    """g(a, kappa, z) of `impl` on arrays in `layout` (model: [B, N, C], swapped inside)."""
    g_of = resolvent_fn(impl)
    if layout == "contiguous":
        return g_of
    swap = lambda x: jnp.swapaxes(x, -1, -2)  # noqa: E731
    return lambda a, k, z: swap(g_of(swap(a), swap(k), z))


def vjp_fn(impl: str, layout: str):
    g_of = layout_fn(impl, layout)

    def fwd_bwd(a, k, z, gbar):
        g, vjp = jax.vjp(g_of, a, k, z)
        return g, vjp(gbar)

    return jax.jit(fwd_bwd)


def residual_bytes(impl: str, layout: str, a, k, z) -> int:
    """Bytes the VJP of `impl` keeps for its backward pass: the leaves of the jax.vjp closure,
    traced abstractly (nothing computed)."""
    leaves = jax.eval_shape(lambda *x: jax.tree.leaves(jax.vjp(layout_fn(impl, layout), *x)[1]), a, k, z)
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in leaves)


def copy_fn():
    return jax.jit(lambda a, k, gbar: (gbar + 1, a + 1, k + 1))


def time_once(f, args) -> float:
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - t


def make_inputs(batch: int, channels: int, n: int, layout: str, seed: int = 0):
    """a ~ N(0, 1), kappa ~ U(0, 1), gbar ~ complex N(0, 1) drawn on the device (host generation
    of 2^29 values would take longer than the benchmark); z: one per channel, Im z = 0.5."""
    shape = (batch, n, channels) if layout == "model" else (batch, channels, n)
    ka, kk, kr, ki = jax.random.split(jax.random.key(seed), 4)
    a = jax.random.normal(ka, shape, jnp.float32)
    k = jax.random.uniform(kk, shape, jnp.float32)
    z = jnp.asarray((np.linspace(-1.5, 1.5, channels)[:, None] + 0.5j).astype(np.complex64))
    gbar = jax.lax.complex(jax.random.normal(kr, shape, jnp.float32), jax.random.normal(ki, shape, jnp.float32))
    return a, k, z, gbar


def measure_impl(impl: str, n: int, inputs, args) -> tuple[dict, object]:
    """(row, jitted VJP) after compiling and one call; (failure record, None) if anything fails."""
    a, k, z, gbar = inputs
    positions = args.batch * args.channels * n
    try:
        t0 = time.perf_counter()
        f = vjp_fn(impl, args.layout).lower(a, k, z, gbar).compile()  # compiled once: timed and measured
        mem = compiled_memory(f)
        time_once(f, inputs)
        first = time.perf_counter() - t0
        stored = residual_bytes(impl, args.layout, a, k, z)
    except Exception as e:  # noqa: BLE001 -- any failure of this impl is recorded, the run goes on
        record = failure_record(e)
        print(f"  N={n:6d} {impl:20s} FAILED: {describe(record)}", flush=True)
        return record, None
    row = {"compile_and_first_call_s": first, "memory": mem,
           "memory_bytes_per_position": mem["total_bytes"] / positions,
           "residual_bytes_per_position": stored / positions}
    print(f"  N={n:6d} {impl:20s} compiled + first call {first:6.1f}s, memory {mem['total_bytes'] / 2**20:8.1f} MiB "
          f"({row['memory_bytes_per_position']:.1f} B/position, residuals {row['residual_bytes_per_position']:.1f})",
          flush=True)
    if first > args.max_compile_s:
        print(f"    (over --max-compile-s={args.max_compile_s}: {impl} is skipped at longer N)", flush=True)
    return row, f


def bench_length(n, impls, args) -> dict:
    elements = args.batch * args.channels * n
    out = {"n": n, "copy_bytes_read": 16 * elements, "copy_bytes_written": 16 * elements, "impls": {}}
    try:
        inputs = make_inputs(args.batch, args.channels, n, args.layout)
        a, k, _, gbar = inputs
        copy = copy_fn()
        time_once(copy, (a, k, gbar))
    except Exception as e:  # noqa: BLE001 -- the inputs or the copy do not fit: record, go on
        print(f"  N={n:6d} inputs / copy FAILED: {describe(failure_record(e))}", flush=True)
        return {**out, **failure_record(e)}
    rows, fns = out["impls"], {}
    for impl in impls:
        rows[impl], f = measure_impl(impl, n, inputs, args)
        if f is not None:
            fns[impl] = f
    best = {impl: float("inf") for impl in fns}
    copy_best = float("inf")
    for _ in range(args.reps):
        for impl, f in list(fns.items()) or [(None, None)]:  # the copy is timed even if nothing runs
            copy_best = min(copy_best, time_once(copy, (a, k, gbar)))
            if f is None:
                continue
            try:
                best[impl] = min(best[impl], time_once(f, inputs))
            except Exception as e:  # noqa: BLE001
                rows[impl].update(failure_record(e))
                print(f"  N={n:6d} {impl:20s} FAILED: {describe(rows[impl])}", flush=True)
                del fns[impl]
    for impl in fns:
        rows[impl]["fwd_bwd_s"] = best[impl]
        rows[impl]["ratio_to_copy"] = best[impl] / copy_best
        print(f"  N={n:6d} {impl:20s} fwd+bwd {best[impl] * 1e3:9.2f} ms = {best[impl] / copy_best:6.2f} x copy "
              f"({copy_best * 1e3:.2f} ms)", flush=True)
    return {**out, "copy_s": copy_best}


def dropped_after(run: dict, impls, max_compile_s: float) -> dict:
    """{impl: why} for the impls of `impls` not to run at longer lengths after `run`."""
    why = {}
    for impl in impls:
        row = run["impls"].get(impl, {})
        if "error" in row:
            why[impl] = f"failed at N={run['n']}"
        elif row.get("compile_and_first_call_s", 0.0) > max_compile_s:
            why[impl] = f"compile + first call over --max-compile-s={max_compile_s} at N={run['n']}"
    return why


# ---------------------------------------------------------------------------
# precision at the range
# ---------------------------------------------------------------------------
def range_inputs(n, seed):
    """The issue's range (as tests/test_bk_scan.py): half the sequence a ~ N(0, 1) (near-resonant
    with Re z), half a ~ U(-1e4, 1e4); kappa ~ U(0, 1e4); z = 0.3 + 1e-3 i."""
    rng = np.random.default_rng(seed)
    a = np.concatenate([rng.normal(size=n // 2), rng.uniform(-1e4, 1e4, n - n // 2)]).astype(np.float32)
    k = rng.uniform(0.0, 1e4, n).astype(np.float32)
    return a[None], k[None], np.array([[0.3 + 1e-3j]], np.complex64)


def realistic_inputs(n, seed):
    """What the model feeds at initialisation: a ~ N(0, 1), kappa ~ softplus-ish U(0, 1), Im z = 0.1."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(1, n)).astype(np.float32)
    k = rng.uniform(0.0, 1.0, (1, n)).astype(np.float32)
    return a, k, np.array([[0.3 + 0.1j]], np.complex64)


def float64_reference(a, k, z):
    with jax.enable_x64(True):
        a_, k_, z_ = prepare_inputs(a.astype(np.float64), k.astype(np.float64), z.astype(np.complex128))
        return np.asarray(jax.jit(bk_scan.sequential_autodiff)(a_.astype(z_.dtype) - z_[..., None], k_))


def precision_row(f, a, k, z, ref, imz: float) -> dict:
    """Errors of the forward ``f`` against ``ref`` (and its second call's time)."""
    jax.block_until_ready(f(a, k, z))
    t = time.perf_counter()
    g = np.asarray(f(a, k, z))
    elapsed = time.perf_counter() - t
    rel = np.abs(g - ref) / np.abs(ref)
    return {
        "finite": bool(np.all(np.isfinite(g))),
        "max_abs_g_times_im_z": float(np.max(np.abs(g)) * imz),
        "rel_err_max": float(rel.max()),
        "rel_err_p99_9": float(np.quantile(rel, 0.999)),
        "rel_err_median": float(np.median(rel)),
        "fraction_above_1e-4": float(np.mean(rel > 1e-4)),
        "forward_s": elapsed,
    }


def precision_table(n: int, pallas: bool) -> dict:
    variants = {
        "sequential": {"impl": "sequential"},
        "sequential+compensated": {"impl": "sequential", "compensated": True},
        "chunked": {"impl": "chunked"},
        "associative": {"impl": "associative"},
        **({"pallas": {"impl": "pallas"}} if pallas else {}),
    }
    table = {}
    for case, make in (("issue_range", range_inputs), ("realistic", realistic_inputs)):
        a, k, z = make(n, seed=4)
        ref = float64_reference(a, k, z)
        imz = float(np.imag(z).min())
        table[case] = {}
        for name, kwargs in variants.items():
            f = jax.jit(lambda a_, k_, z_, kw=kwargs: causal_resolvent_diag(a_, k_, z_, **kw))
            try:
                row = precision_row(f, a, k, z, ref, imz)
            except Exception as e:  # noqa: BLE001
                table[case][name] = failure_record(e)
                print(f"  precision {case:12s} {name:24s} FAILED: {describe(table[case][name])}", flush=True)
                continue
            table[case][name] = row
            print(f"  precision {case:12s} {name:24s} max {row['rel_err_max']:.2e}  p99.9 {row['rel_err_p99_9']:.2e}  "
                  f"median {row['rel_err_median']:.1e}  >1e-4: {row['fraction_above_1e-4']:.1e}  "
                  f"|g| Im z <= {row['max_abs_g_times_im_z']:.4f}", flush=True)
    return {"n": n, "reference": "float64 sequential (plain lax.scan, complex128)", "cases": table}


def gradient_precision(n: int, pallas: bool) -> dict:
    """Normwise relative error of d(loss)/d(a, kappa, z) in float32 vs float64 plain autodiff."""
    a, k, z = realistic_inputs(n, seed=5)
    rng = np.random.default_rng(6)
    w = rng.normal(size=a.shape).astype(np.float32)

    def grads(g_of, args):
        def loss(a_, k_, z_):
            g = g_of(a_, k_, z_)
            return jnp.sum(jnp.real(g) * w + jnp.imag(g))

        return [np.asarray(x) for x in jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)]

    with jax.enable_x64(True):
        ref = grads(resolvent_fn("sequential_autodiff"), (a.astype(np.float64), k.astype(np.float64),
                                                          z.astype(np.complex128)))
    out = {}
    impls = ("sequential", "chunked", "associative", *(("pallas",) if pallas else ()), *REFERENCE_IMPLS)
    for impl in impls:
        try:
            got = grads(resolvent_fn(impl), (a, k, z))
        except Exception as e:  # noqa: BLE001
            out[impl] = failure_record(e)
            print(f"  gradient precision {impl:22s} FAILED: {describe(out[impl])}", flush=True)
            continue
        out[impl] = {name: float(np.linalg.norm(x - r) / np.linalg.norm(r))
                     for name, x, r in zip(("a", "kappa", "z"), got, ref)}
        print(f"  gradient precision {impl:22s} " + "  ".join(f"{n_}: {e:.1e}" for n_, e in out[impl].items()),
              flush=True)
    return {"n": n, "inputs": "realistic (a ~ N(0,1), kappa ~ U(0,1), Im z = 0.1)", "normwise_rel_err": out}


def summarize(timing: list[dict]) -> dict:
    """Per impl: ratio to the copy, bytes per position and failures by N; the best public impl
    over N >= 16k (target: 4x the copy)."""
    summary = {}
    for impl in sorted({i for r in timing for i in r["impls"]}):
        by_n = {r["n"]: r["impls"][impl] for r in timing if impl in r["impls"]}
        ok = {n: v for n, v in by_n.items() if "ratio_to_copy" in v}
        row = {"ratio_to_copy": {n: v["ratio_to_copy"] for n, v in ok.items()},
               "residual_bytes_per_position": {n: v["residual_bytes_per_position"] for n, v in ok.items()},
               "memory_bytes_per_position": {n: v["memory_bytes_per_position"] for n, v in ok.items()}}
        failed = {n: describe(v) for n, v in by_n.items() if "error" in v}
        if failed:
            row["failed"] = failed
        if 4096 in ok and 65536 in ok:
            row["memory_64k_over_4k"] = ok[65536]["memory"]["total_bytes"] / ok[4096]["memory"]["total_bytes"]
        summary[impl] = row
    long = [r for r in timing if r["n"] >= 16384]
    public = [i for i in PUBLIC_IMPLS if long and all("ratio_to_copy" in r["impls"].get(i, {}) for r in long)]
    if public:
        best = min(public, key=lambda i: max(r["impls"][i]["ratio_to_copy"] for r in long))
        summary["best_impl_at_n_ge_16k"] = {
            "impl": best,
            "max_ratio_to_copy": max(r["impls"][best]["ratio_to_copy"] for r in long),
            "target": 4.0,
        }
    return summary


# ---------------------------------------------------------------------------
def plot(payload, path):
    plt = pyplot()
    runs = payload["timing"]
    impls = sorted({i for r in runs for i in r["impls"]})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for impl in impls:
        pts = [(r["n"], r["impls"][impl]) for r in runs if impl in r["impls"] and "ratio_to_copy" in r["impls"][impl]]
        if not pts:
            continue
        ns = [p[0] for p in pts]
        style = "--" if impl in REFERENCE_IMPLS else (":" if impl == "compensated" else "-")
        axes[0].plot(ns, [p[1]["ratio_to_copy"] for p in pts], style, marker="o", label=impl)
        axes[1].plot(ns, [p[1]["memory"]["total_bytes"] / 2**20 for p in pts], style, marker="o", label=impl)
    axes[0].axhline(4.0, color="k", lw=0.8, ls=":", label="target 4x")
    axes[0].set(xscale="log", yscale="log", xlabel="sequence length N", ylabel="fwd+bwd time / copy time",
                title=f"BK core vs same-run memory copy (B={payload['config']['batch']}, "
                      f"C={payload['config']['channels']}, {payload['provenance']['machine']['backend']})")
    axes[1].set(xscale="log", yscale="log", xlabel="sequence length N", ylabel="compiled memory (MiB)",
                title="arguments + outputs + temporaries (XLA)")
    finish(fig, axes, path, legend_fontsize=8)


def main():
    p = argparse.ArgumentParser(prog="python -m experiments.bench_bk_core", description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--lengths", default="1024,2048,4096,8192,16384,32768,65536")
    p.add_argument("--impls",
                   default="sequential,chunked,associative,compensated,sequential_autodiff,associative_autodiff")
    p.add_argument("--layout", choices=("model", "contiguous"), default="model")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--max-compile-s", type=float, default=120.0,
                   help="an impl whose compile + first call takes longer is not run at longer N")
    p.add_argument("--precision-n", type=int, default=1 << 20, help="0 = skip the precision table")
    p.add_argument("--out", default="results/bench_bk_core.json")
    args = p.parse_args()

    impls = args.impls.split(",")
    config = {"batch": args.batch, "channels": args.channels, "layout": args.layout, "reps": args.reps,
              "impls": impls, "auto_impl": bk_scan.auto_impl(), "load_average_start": os.getloadavg()}
    timing, not_run = [], {}

    def payload() -> dict:
        return {"config": {**config, "load_average_end": os.getloadavg()}, "summary": summarize(timing),
                "timing": timing, "peak_rss_mb": peak_rss_mb()}

    for n in (int(x) for x in args.lengths.split(",")):
        run = bench_length(n, [i for i in impls if i not in not_run], args)
        if not_run:
            run["not_run"] = dict(not_run)
        timing.append(run)
        not_run.update(dropped_after(run, impls, args.max_compile_s))
        write_json(args.out, payload())  # after every length: a later crash keeps what was measured

    result = payload()
    if args.precision_n:
        result["precision"] = precision_table(args.precision_n, "pallas" in impls)
        result["gradient_precision"] = gradient_precision(4096, "pallas" in impls)
    write_json(args.out, result)
    plot({**result, "provenance": {"machine": {"backend": jax.default_backend()}}},
         os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out} and {os.path.splitext(args.out)[0]}.png")


if __name__ == "__main__":
    main()
