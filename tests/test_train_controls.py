"""Training controls: accumulation inside the step, skipped steps, clipping, smoothing, EMA, resume."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_model import ALL_ON, set_model_keys
from test_train import Interrupt, interrupt_after

from muse_jax.model.lm import LanguageModel
from muse_jax.model.param_roles import roles
from muse_jax.train.optimizer import build_optimizer, optimizer_metrics
from muse_jax.train.loss import smoothed_cross_entropy
from muse_jax.train.step import accumulate_gradients, ema_update, make_train_step
from muse_jax.settings import ConfigError, ModelSettings, OptimSettings, Settings, TrainSettings
from muse_jax.train import run as run_module
from muse_jax.modes.train import train


def test_accumulated_gradients_equal_one_large_batch(tiny_config):
    graphdef, state = nnx.split(LanguageModel(ModelSettings.from_config(tiny_config.model), 64, rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (8, 17), 0, 64)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}

    def loss_fn(params, batch):
        logits = nnx.merge(graphdef, params)(batch["inputs"])
        return smoothed_cross_entropy(logits, batch["targets"], 0.1)

    (objective, nll), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, batch)
    acc_objective, acc_nll, acc_grads = jax.jit(accumulate_gradients, static_argnums=(0, 3))(loss_fn, params, batch, 4)
    np.testing.assert_allclose(acc_objective, objective, rtol=1e-5)
    np.testing.assert_allclose(acc_nll, nll, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), acc_grads, grads)


def test_label_smoothing_equals_optax_smoothed_labels():
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 11))
    targets = jax.random.randint(jax.random.PRNGKey(1), (2, 5), 0, 11)
    objective, nll = smoothed_cross_entropy(logits, targets, 0.2)
    labels = optax.smooth_labels(jax.nn.one_hot(targets, 11), 0.2)
    np.testing.assert_allclose(objective, optax.softmax_cross_entropy(logits, labels).mean(), rtol=1e-6)
    np.testing.assert_allclose(nll, optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean(), rtol=1e-6)


def test_ema_starts_fast_then_uses_the_decay():
    ema, params = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
    np.testing.assert_allclose(ema_update(ema, params, 0.99, jnp.int32(0))["w"], 0.9)  # d = 1/10
    np.testing.assert_allclose(ema_update(ema, params, 0.99, jnp.int32(10_000))["w"], 0.01, rtol=1e-5)


@pytest.mark.parametrize("tsp", [False, True])
def test_clip_threshold_warmup_then_clip_and_lr(tiny_config, tsp):
    cfg = tiny_config.optim
    cfg.warmup_steps, cfg.grad_clip_warmup, cfg.clip_warmup_steps, cfg.grad_clip = 0, 0.5, 2, 2.0
    cfg.tsp.enabled = tsp  # city 0 ("explore"): lr × 1.5, clip × 2
    tx = build_optimizer(OptimSettings.from_config(cfg), 10, seed=0)  # no model: one parameter group
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    update = jax.jit(lambda state: tx.update({"w": jnp.array([0.0, 6.0, 8.0])}, state, params, loss=1.0)[1])
    clipped, lrs = [], []
    for _ in range(4):
        state = update(state)
        metrics = optimizer_metrics(state)
        clipped.append(float(metrics["grad_norm_clipped"]))
        lrs.append(float(metrics["lr"]))
    scale = (1.5, 2.0) if tsp else (1.0, 1.0)
    np.testing.assert_allclose(clipped, np.array([0.5, 0.5, 2.0, 2.0]) * scale[1], rtol=1e-6)
    assert lrs[0] == pytest.approx(cfg.adamw.lr * scale[0])  # no warmup: the peak at once


def reciprocal_model():
    class ReciprocalEmbed(nnx.Module):
        """logits = embed(t) / t: a token 0 makes the loss and the gradient non-finite."""

        def __init__(self, rngs: nnx.Rngs):
            self.embed = nnx.Embed(8, 8, rngs=rngs)

        def forward_with_aux(self, tokens):  # the train step's interface of LanguageModel
            return self.embed(tokens) / tokens[..., None], {"aux_loss": 0.0, "expert_load": jnp.zeros((1, 0))}

    graphdef, state = nnx.split(ReciprocalEmbed(nnx.Rngs(0)))
    return graphdef, nnx.to_pure_dict(state)


def test_nan_micro_batch_skips_the_whole_step(tiny_config):
    tiny_config.train.grad_accum_steps, tiny_config.train.ema_decay = 2, 0.9
    tiny_config.optim.aligner.enabled = tiny_config.optim.tsp.enabled = True
    graphdef, params = reciprocal_model()
    tx = build_optimizer(OptimSettings.from_config(tiny_config.optim), 8, 0)  # no model: one parameter group
    cast = jax.tree.map(lambda _: True, params)
    init_state, train_step = make_train_step(graphdef, tx, TrainSettings.from_config(tiny_config.train), cast)
    good = {"inputs": jnp.arange(1, 13).reshape(4, 3) % 7 + 1, "targets": jnp.arange(12).reshape(4, 3) % 8}
    bad = {**good, "inputs": good["inputs"].at[3, 1].set(0)}  # in the second micro-batch only

    state, _ = train_step(init_state(params, jax.random.PRNGKey(0)), good)
    before = jax.tree.map(lambda x: np.array(x, copy=True), state)
    state, metrics = train_step(state, bad)
    assert int(metrics["skipped_steps"]) == 1 and not np.isfinite(float(metrics["loss"]))
    jax.tree.map(np.testing.assert_array_equal, state.params, before.params)
    jax.tree.map(np.testing.assert_array_equal, state.opt_state.inner_state, before.opt_state.inner_state)
    assert int(state.step) == 2 and np.all(np.isfinite(jax.tree.leaves(state.ema_params)[0]))

    state, metrics = train_step(state, good)
    assert int(metrics["skipped_steps"]) == 1 and np.isfinite(float(metrics["loss"]))
    assert not np.array_equal(state.params["embed"]["embedding"], before.params["embed"]["embedding"])


def test_grad_accum_steps_out_of_range_is_an_error(tiny_config):
    tiny_config.train.grad_accum_steps = 65
    with pytest.raises(ConfigError, match="train.grad_accum_steps must be in"):
        TrainSettings.from_config(tiny_config.train)


def metric_rows(workdir: str) -> dict[int, dict]:
    """step → the row's values, eval rows merged in; tokens_per_sec (a timing) left out."""
    rows: dict[int, dict] = {}
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        for row in map(json.loads, f):
            rows.setdefault(row.pop("step"), {}).update(row)
    for row in rows.values():
        row.pop("tokens_per_sec", None)
    return rows


def test_accumulated_run_with_every_control_resumes_exactly(tiny_config, monkeypatch, capsys):
    t, o = tiny_config.train, tiny_config.optim
    t.batch_size, t.grad_accum_steps = 8, 8
    t.ema_decay, t.eval_use_ema, t.label_smoothing = 0.9, True, 0.1
    o.aligner.enabled, o.aligner.warmup = True, 2
    o.tsp.enabled, o.tsp.window_size, o.tsp.eval_interval, o.tsp.min_dwell, o.tsp.epsilon = True, 2, 2, 0, 0.5
    reference = tiny_config.copy_and_resolve_references()
    reference.workdir = tiny_config.workdir + "_reference"
    train(Settings.from_config(reference), "日本")
    expected = metric_rows(reference.workdir)
    train_keys = {"loss", "lr", "grad_norm_raw", "grad_norm_clipped", "skipped_steps",
                  "aligner/opposite_fraction", "aligner/energy_removed", "tsp/city"}
    assert all(train_keys <= set(expected[step]) for step in range(1, 9))
    assert all(np.isfinite(expected[step]["loss"]) for step in range(1, 9))
    assert "val_loss" in expected[4] and "val_loss" in expected[8]

    original = run_module.train_dataset
    monkeypatch.setattr(run_module, "train_dataset", interrupt_after(6, original))
    with pytest.raises(Interrupt):
        train(Settings.from_config(tiny_config), "日本")
    monkeypatch.setattr(run_module, "train_dataset", original)
    train(Settings.from_config(tiny_config), "日本")
    assert "resumed from step 4" in capsys.readouterr().out
    assert metric_rows(tiny_config.workdir) == expected  # losses, norms, lr, city, EMA val_loss


def test_weight_decay_reaches_every_weight_matrix_and_nothing_else(tiny_config):
    """All components on (TT embedding, low-rank linears, MoE, BK): decayed = the kernels, the
    embedding table or its TT cores; never a norm scale, bias, energy or width."""
    model = LanguageModel(ModelSettings.from_config(set_model_keys(tiny_config.model, ALL_ON)), 97, rngs=nnx.Rngs(0))
    names = {jax.tree_util.keystr(p): bool(m) for p, m in jax.tree_util.tree_leaves_with_path(roles(model).decay)}
    decayed = {n for n, m in names.items() if m}
    assert any("core_vocab" in n for n in decayed) and any("factor_in" in n for n in decayed)
    assert all(n.endswith(("'kernel']", "'embedding']", "'core_vocab_1']", "'core_vocab_2']", "'core_vocab_3']"))
               for n in decayed)
    assert not any(word in n for n in decayed for word in ("scale", "bias", "energy", "width"))
    assert len(decayed) < len(names)


def test_profile_window_writes_a_trace(tiny_config):
    tiny_config.train.steps = 4
    tiny_config.train.profile_start, tiny_config.train.profile_steps = 2, 2
    train(Settings.from_config(tiny_config), "日本")
    traces = [f for _, _, files in os.walk(os.path.join(tiny_config.workdir, "profile")) for f in files]
    assert any(f.endswith(".xplane.pb") for f in traces), traces


def test_profile_settings_out_of_range_are_an_error(tiny_config):
    tiny_config.train.profile_steps = 0
    with pytest.raises(ConfigError, match="train.profile_steps"):
        TrainSettings.from_config(tiny_config.train)


@pytest.mark.parametrize("key", ["log_every", "eval_every", "seq_len"])
def test_zero_counts_are_a_config_error_before_anything_is_written(tiny_config, key):
    tiny_config.train[key] = 0
    with pytest.raises(ConfigError, match=f"train.{key} must be >= 1"):
        train(Settings.from_config(tiny_config), "日本")
    assert not os.path.exists(tiny_config.workdir)


def test_a_profile_window_the_run_never_reaches_is_a_warning(tiny_config, capsys):
    tiny_config.train.steps, tiny_config.optim.warmup_steps = 2, 1
    tiny_config.train.profile_start = 5
    train(Settings.from_config(tiny_config), "日本")
    assert "warning: train.profile_start=5 is not among the steps this run takes (1..2)" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(tiny_config.workdir, "profile"))
