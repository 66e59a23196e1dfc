"""Host offload of the train state (train.offload_params, train.offload_optimizer): it compiles
and runs on CPU, trains and evaluates exactly like the state in device memory, and its
checkpoints restore into pinned host memory and resume exactly."""

import os
import shutil

import jax

from test_train_controls import metric_rows
from muse_jax.train.run import Run
from muse_jax.settings import Settings
from muse_jax.modes.train import train


def test_offloaded_state_trains_and_resumes_like_the_device_one(tiny_config, capsys):
    t = tiny_config.train
    t.steps, t.checkpoint_every, t.eval_every = 4, 2, 2
    t.ema_decay, t.eval_use_ema = 0.9, True
    plain = tiny_config.copy_and_resolve_references()
    plain.workdir = tiny_config.workdir + "_device"
    train(Settings.from_config(plain), "日本")

    t.offload_params = t.offload_optimizer = True
    train(Settings.from_config(tiny_config), "日本")
    assert metric_rows(tiny_config.workdir) == metric_rows(plain.workdir)  # losses, norms, EMA val_loss

    run = Run(Settings.from_config(tiny_config))
    run.restore_latest()
    kinds = {part: {x.sharding.memory_kind for x in jax.tree.leaves(getattr(run.state, part))}
             for part in ("params", "opt_state", "ema_params", "step")}
    assert kinds == {"params": {"pinned_host"}, "opt_state": {"pinned_host"}, "ema_params": {"pinned_host"},
                     "step": {"device"}}

    resumed = tiny_config.copy_and_resolve_references()
    resumed.workdir = tiny_config.workdir + "_resumed"
    shutil.copytree(tiny_config.workdir, resumed.workdir)
    shutil.rmtree(os.path.join(resumed.workdir, "checkpoints", "4"))
    capsys.readouterr()
    train(Settings.from_config(resumed), "日本")
    assert "resumed from step 2" in capsys.readouterr().out
    assert metric_rows(resumed.workdir) == metric_rows(plain.workdir)
