"""`--mode=dry_run`: the memory answer before the first step, from an AOT compile of the real
train step on abstract inputs (no parameter is allocated).

Reported (and written to `workdir/dry_run.json`):
  parameters     stored and dense-equivalent counts
  analytic bytes params, grads (= params, same dtype), optimizer state and EMA (from the abstract
                 state's shapes), activations (an estimate: saved tensors per layer, see
                 `activation_bytes_estimate`)
  xla            `compiled.memory_analysis()`: arguments, outputs, temporaries, aliases, host parts
  peak           device peak = arguments + outputs + temporaries − aliases (donated state reused)
  verdict        fits / does not fit `hardware.device_memory_gb`
  largest batch  the largest power-of-two `train.batch_size` whose compile fits (MaxText's idea)
On CPU these are XLA's CPU numbers (a close estimate of a GPU compile's); on GPU they are the GPU's.
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from muse_jax.data.settings import DataSettings
from muse_jax.model.lm import build_model
from muse_jax.model.param_count import parameter_counts
from muse_jax.provenance import write_json
from muse_jax.train.optimizer import build_optimizer
from muse_jax.train.step import make_train_step

GIB = 2**30


def tree_bytes(tree) -> int:
    return int(sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def activation_bytes_estimate(model_cfg, batch: int, seq_len: int, vocab: int, micro_batches: int) -> int:
    """float32 tensors saved for the backward pass of one micro-batch without remat:
    per layer ~ (8·D + 3·F + 12·C) values per token (norm inputs, mixer projections, complex
    resolvent features, FFN gate/up/act), plus the logits and their softmax (2·V per token)."""
    tokens = batch // micro_batches * seq_len
    d, f = model_cfg.d_model, model_cfg.ffn_mult * model_cfg.d_model
    c = model_cfg.bk.channels if model_cfg.kind == "bk" else 0
    per_layer = 8 * d + 3 * f + 12 * c
    return 4 * tokens * (model_cfg.n_layers * per_layer + 2 * vocab)


def abstract_train_state(cfg: ml_collections.ConfigDict, vocab: int):
    """(jitted step, abstract TrainState) for the config, without allocating anything."""
    model = nnx.eval_shape(lambda: build_model(cfg, vocab, nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    tx = build_optimizer(cfg.optim, int(cfg.train.steps), int(cfg.seed))
    init_state, train_step = make_train_step(graphdef, tx, cfg.train)
    abstract = jax.eval_shape(init_state, params, jax.ShapeDtypeStruct((2,), jnp.uint32))
    return train_step, abstract


def compiled_memory(train_step, abstract_state, batch: int, seq_len: int) -> dict:
    tokens = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32)
    compiled = train_step.lower(abstract_state, {"inputs": tokens, "targets": tokens}).compile()
    m = compiled.memory_analysis()
    fields = ("argument", "output", "temp", "alias", "generated_code")
    out = {f"{k}_bytes": int(getattr(m, f"{k}_size_in_bytes")) for k in fields}
    out.update({f"host_{k}_bytes": int(getattr(m, f"host_{k}_size_in_bytes", 0)) for k in fields})
    out["peak_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    return out


def largest_fitting_batch(train_step, abstract_state, seq_len: int, budget: int, micro: int, start: int) -> int:
    """Doubling search over batch sizes (multiples of the micro-batch count): the largest that fits."""
    best, batch = 0, max(micro, 1)
    while batch <= max(start, 1) * 1024:
        if compiled_memory(train_step, abstract_state, batch, seq_len)["peak_bytes"] > budget:
            break
        best, batch = batch, batch * 2
    return best


def dry_run(cfg: ml_collections.ConfigDict) -> dict:
    """Compile, measure, print, write `workdir/dry_run.json`; exit status 1 if it does not fit."""
    vocab = DataSettings.from_config(cfg.data, cfg.workdir).vocab_size  # the tokenizer a run would train
    t = cfg.train
    batch, seq_len, micro = int(t.batch_size), int(t.seq_len), int(t.grad_accum_steps)
    budget = int(float(cfg.hardware.device_memory_gb) * GIB)
    train_step, abstract = abstract_train_state(cfg, vocab)
    xla = compiled_memory(train_step, abstract, batch, seq_len)
    report = {
        "config": {"model.kind": cfg.model.kind, "batch_size": batch, "seq_len": seq_len, "grad_accum_steps": micro},
        "backend": jax.default_backend(),
        "parameters": parameter_counts(cfg.model, vocab),
        "analytic_bytes": {
            "params": tree_bytes(abstract.params),
            "grads": tree_bytes(abstract.params),
            "optimizer_state": tree_bytes(abstract.opt_state),
            "ema": tree_bytes(abstract.ema_params) if abstract.ema_params is not None else 0,
            "activations_estimate": activation_bytes_estimate(cfg.model, batch, seq_len, vocab, micro),
        },
        "xla_memory_analysis": xla,
        "device_memory_gb": budget / GIB,
        "peak_device_gb": xla["peak_bytes"] / GIB,
    }
    report["fits"] = xla["peak_bytes"] <= budget
    report["largest_batch_size_that_fits"] = largest_fitting_batch(train_step, abstract, seq_len, budget, micro, batch)
    report["verdict"] = (
        f"fits: peak {report['peak_device_gb']:.2f} GB of {report['device_memory_gb']:g} GB"
        if report["fits"] else
        f"does not fit: needs {report['peak_device_gb']:.2f} GB, have {report['device_memory_gb']:g} GB"
    )
    write_json(os.path.join(cfg.workdir, "dry_run.json"), report)
    print(json.dumps(report, indent=2))
    print(report["verdict"])
    return report
