"""--mode=dry_run: analytic bytes match the real model; offload moves state off the device's
budget; a config that cannot fit fails clearly."""

import subprocess
import sys

import jax
from flax import nnx

from muse_jax.model.lm import LanguageModel
from muse_jax.train.dry_run import GIB, dry_run, tree_bytes


def test_analytic_parameter_bytes_equal_the_real_ones(tiny_config):
    tiny_config.hardware.device_memory_gb = 0.01  # batch 8 fits, 16 does not: a short search
    report = dry_run(tiny_config)
    model = LanguageModel(tiny_config.model, tiny_config.data.vocab_size, rngs=nnx.Rngs(0))
    real = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert report["analytic_bytes"]["params"] == real == tree_bytes(nnx.state(model, nnx.Param))
    assert report["parameters"]["stored"] == sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert report["fits"] and report["largest_batch_size_that_fits"] >= tiny_config.train.batch_size
    assert report["xla_memory_analysis"]["peak_bytes"] > report["analytic_bytes"]["params"]


def test_offloaded_state_is_reported_as_host_memory(tiny_config):
    tiny_config.hardware.device_memory_gb = 0.01
    tiny_config.train.ema_decay = 0.9
    plain = dry_run(tiny_config)
    tiny_config.train.offload_params = tiny_config.train.offload_optimizer = True
    offloaded = dry_run(tiny_config)
    b = offloaded["analytic_bytes"]
    assert offloaded["xla_memory_analysis"]["host_state_bytes"] == b["params"] + b["optimizer_state"] + b["ema"]
    assert plain["xla_memory_analysis"]["host_state_bytes"] == 0
    assert offloaded["peak_device_gb"] < plain["peak_device_gb"]
    assert offloaded["peak_device_gb"] * GIB >= 2 * b["params"] + b["optimizer_state"] + b["ema"]  # the update
    assert "pinned host memory" in offloaded["verdict"]


def test_a_config_that_cannot_fit_exits_non_zero(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "muse_jax.main", "--config", "configs/tiny_ja.py", "--mode=dry_run",
         f"--config.workdir={tmp_path}", "--config.model.d_model=32", "--config.model.n_layers=1",
         "--config.hardware.device_memory_gb=0.0001"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode != 0
    assert "does not fit: needs" in r.stdout and (tmp_path / "dry_run.json").exists()
