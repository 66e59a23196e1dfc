"""`--mode=dry_run`: the memory answer before the first step, from an AOT compile of the real
train step on abstract inputs (no parameter is allocated).

Reported (and written to `workdir/dry_run.json`):
  parameters     stored and dense-equivalent counts
  analytic bytes params, grads (= params, same dtype), optimizer state and EMA (from the abstract
                 state's shapes), activations_without_remat_estimate (saved tensors per layer with
                 train.remat_policy=none, see `activation_bytes_estimate`: remat keeps less, and the
                 XLA peak below counts what the compiled step really keeps)
  xla            `compiled.memory_analysis()`: arguments, outputs, temporaries, aliases, host parts
  peak           device peak = arguments + outputs + temporaries − aliases (donated state reused),
                 without the state offloaded to pinned host memory (`train.offload_params`,
                 `train.offload_optimizer`; reported apart as host_state_gb); on CPU, with
                 offload, the larger of the step's two phases compiled alone (`compiled_memory`)
  verdict        fits / does not fit `hardware.device_memory_gb`, by the device peak
  largest batch  the largest `train.batch_size` (× or ÷ powers of two) whose compile fits (MaxText's idea)
On CPU these are XLA's CPU numbers (a close estimate of a GPU compile's); on GPU they are the GPU's.
The activations offloaded by `train.remat_policy=offload` stay in the CPU compile's temporaries
(the CPU backend does not separate host memory), so that policy's CPU peak is an upper bound.
"""

import json
import math
import os

import jax
import jax.numpy as jnp

from muse_jax.model.param_count import parameter_counts
from muse_jax.provenance import write_json
from muse_jax.settings import ModelSettings, Settings
from muse_jax.train.device_memory import GIB
from muse_jax.train.sharding import batch_sharding, batch_shards
from muse_jax.train.state import TrainSetup

MAX_BATCH_FACTOR = 64  # the batch-size search stops at 64 × train.batch_size


def tree_bytes(tree) -> int:
    return int(sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def activation_bytes_estimate(model: ModelSettings, batch: int, seq_len: int, vocab: int, micro_batches: int,
                              itemsize: int = 4, loss_chunk_tokens: int = 0) -> int:
    """Tensors (of `itemsize` bytes: the compute dtype) saved for the backward pass of one
    micro-batch without remat: per layer ~ (8·D + 3·F + 12·C) values per token (norm inputs, mixer projections, complex
    resolvent features, FFN gate/up/act), plus the logits and their softmax (2·V per token) — of
    every token, or with `train.loss_chunk_tokens` of one slice of the chunked loss (`train/loss.py`)."""
    rows = batch // micro_batches
    tokens = rows * seq_len
    d, f = model.d_model, model.ffn_width
    c = model.bk.channels if model.is_bk else 0
    per_layer = 8 * d + 3 * f + 12 * c
    logit_tokens = min(tokens, rows * max(1, loss_chunk_tokens // rows)) if loss_chunk_tokens else tokens
    return itemsize * (tokens * model.n_layers * per_layer + logit_tokens * 2 * vocab)


def host_bytes(tree) -> int:
    """Bytes of the leaves (ShapeDtypeStructs with shardings) placed in pinned host memory."""
    return tree_bytes([x for x in jax.tree.leaves(tree) if x.sharding.memory_kind == "pinned_host"])


def compile_train_step(setup: TrainSetup, batch: int, seq_len: int):
    """The train step compiled ahead of time for batches of `batch` × `seq_len` tokens: an
    executable called like the jitted step, whose `memory_analysis()` is XLA's prediction."""
    tokens = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32)
    return setup.train_step.lower(setup.abstract, {"inputs": tokens, "targets": tokens}).compile()


def compiled_memory(setup: TrainSetup, batch: int, seq_len: int) -> dict:
    """XLA's memory_analysis of the train step at this batch size, and the device peak.

    peak = arguments + outputs + temporaries − aliases (the donated state is reused). With state
    offloaded to pinned host memory, backends that place memory kinds (GPU, TPU) report the host
    part in the host_* fields, and the device fields are the device peak. The CPU backend counts
    host-placed arrays as device ones and elides the transfers, so there the device peak is
    measured phase by phase (`step.py` brings an offloaded part in only when the phase needs it):
      forward/backward  the gradients phase compiled alone (params and gradients included), plus
                        the state that stays on the device meanwhile (what is not offloaded);
      update            the update phase compiled alone: params, gradients, optimizer state and
                        EMA all on the device, as the step brings them in;
      device peak       the larger of the two."""
    abstract = setup.abstract
    out = memory_fields(compile_train_step(setup, batch, seq_len))
    host_state = host_bytes(abstract)
    out["host_state_bytes"] = host_state
    out["host_counted_as_device"] = bool(host_state) and not (out["host_argument_bytes"] or out["host_output_bytes"])
    if not out["host_counted_as_device"]:
        out["device_peak_bytes"] = out["peak_bytes"]
        return out
    on_device = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                             setup.shapes, setup.device_shardings)
    tokens = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32, sharding=batch_sharding(setup.mesh))
    gradients = jax.jit(setup.phases.gradients).lower(on_device.params, {"inputs": tokens, "targets": tokens})
    update = jax.jit(setup.phases.update, donate_argnums=(0,)).lower(
        on_device, on_device.params, jax.ShapeDtypeStruct((), jnp.float32))
    resident = tree_bytes(abstract) - host_state - tree_bytes(abstract.params)  # beside the gradients phase
    forward_backward = memory_fields(gradients.compile())["peak_bytes"] + resident
    update_peak = memory_fields(update.compile())["peak_bytes"]
    out["phases"] = {"forward_backward_bytes": forward_backward, "update_bytes": update_peak}
    out["device_peak_bytes"] = max(forward_backward, update_peak)
    return out


def memory_fields(compiled) -> dict:
    m = compiled.memory_analysis()
    fields = ("argument", "output", "temp", "alias", "generated_code")
    out = {f"{k}_bytes": int(getattr(m, f"{k}_size_in_bytes")) for k in fields}
    out.update({f"host_{k}_bytes": int(getattr(m, f"host_{k}_size_in_bytes", 0)) for k in fields})
    out["peak_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    return out


def largest_fitting_batch(setup: TrainSetup, seq_len: int, budget: int, micro: int, start: int,
                          start_peak: int) -> int:
    """The largest batch size whose device peak fits: doubling from the configured one while it
    fits (up to MAX_BATCH_FACTOR × it), else halving down. Batch sizes stay multiples of the
    micro-batch count and of the devices the batch is split over; 0 if none fits."""
    unit = math.lcm(max(micro, 1), batch_shards(setup.mesh))

    def fits(batch: int) -> bool:
        return compiled_memory(setup, batch, seq_len)["device_peak_bytes"] <= budget

    if start_peak <= budget:
        best = start
        while best * 2 <= start * MAX_BATCH_FACTOR and fits(best * 2):
            best *= 2
        return best
    batch = start // 2
    while batch >= unit:
        if batch % unit == 0 and fits(batch):
            return batch
        batch //= 2
    return 0


def dry_run(settings: Settings) -> dict:
    """Compile, measure, print, write `workdir/dry_run.json`; exit status 1 if it does not fit."""
    vocab = settings.data.model_vocab_size  # the tokenizer a run would train, or the synthetic task's
    t = settings.train
    batch, seq_len, micro = t.batch_size, t.seq_len, t.grad_accum_steps
    budget = int(settings.hardware.device_memory_gb * GIB)
    setup = TrainSetup(settings, vocab)
    abstract = setup.abstract
    xla = compiled_memory(setup, batch, seq_len)
    report = {
        "config": {"model.kind": settings.model.kind, "batch_size": batch, "seq_len": seq_len, "grad_accum_steps": micro,
                   "remat_policy": t.remat_policy, "offload_params": setup.offload_params,
                   "offload_optimizer": t.offload_optimizer, "param_dtype": setup.precision.param_dtype.name,
                   "compute_dtype": setup.precision.compute_dtype.name, "loss_chunk_tokens": t.loss_chunk_tokens,
                   "mesh": dict(setup.mesh.shape)},
        "backend": jax.default_backend(),
        "parameters": parameter_counts(settings.model, vocab),
        "analytic_bytes": {
            "params": tree_bytes(abstract.params),
            "grads": tree_bytes(abstract.params),
            "optimizer_state": tree_bytes(abstract.opt_state),
            "ema": tree_bytes(abstract.ema_params) if abstract.ema_params is not None else 0,
            "activations_without_remat_estimate": activation_bytes_estimate(
                settings.model, batch, seq_len, vocab, micro, setup.precision.compute_dtype.itemsize,
                t.loss_chunk_tokens),
            "host_resident_state": xla["host_state_bytes"],
        },
        "xla_memory_analysis": xla,
        "device_memory_gb": budget / GIB,
        "peak_device_gb": xla["device_peak_bytes"] / GIB,
        "host_state_gb": xla["host_state_bytes"] / GIB,
    }
    report["fits"] = xla["device_peak_bytes"] <= budget
    report["largest_batch_size_that_fits"] = largest_fitting_batch(setup, seq_len, budget, micro, batch,
                                                                   xla["device_peak_bytes"])
    report["verdict"] = (
        f"fits: peak {report['peak_device_gb']:.2f} GB of {report['device_memory_gb']:g} GB"
        if report["fits"] else
        f"does not fit: needs {report['peak_device_gb']:.2f} GB, have {report['device_memory_gb']:g} GB"
    )
    if xla["host_state_bytes"]:
        report["verdict"] += f" (+ {report['host_state_gb']:.2f} GB of state in pinned host memory)"
    write_json(os.path.join(settings.workdir, "dry_run.json"), report)
    print(json.dumps(report, indent=2))
    print(report["verdict"])
    return report
