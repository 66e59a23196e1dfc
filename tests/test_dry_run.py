"""--mode=dry_run: analytic bytes match the real model; a config that cannot fit fails clearly."""

import subprocess
import sys

import jax
from flax import nnx

from muse_jax.model.lm import LanguageModel
from muse_jax.train.dry_run import dry_run, tree_bytes


def test_analytic_parameter_bytes_equal_the_real_ones(tiny_config):
    report = dry_run(tiny_config)
    model = LanguageModel(tiny_config.model, tiny_config.data.vocab_size, rngs=nnx.Rngs(0))
    real = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert report["analytic_bytes"]["params"] == real == tree_bytes(nnx.state(model, nnx.Param))
    assert report["parameters"]["stored"] == sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert report["fits"] and report["largest_batch_size_that_fits"] >= tiny_config.train.batch_size
    assert report["xla_memory_analysis"]["peak_bytes"] > report["analytic_bytes"]["params"]


def test_a_config_that_cannot_fit_exits_non_zero(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "muse_jax.main", "--config", "configs/tiny_ja.py", "--mode=dry_run",
         f"--config.workdir={tmp_path}", "--config.model.d_model=32", "--config.model.n_layers=1",
         "--config.hardware.device_memory_gb=0.0001"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode != 0
    assert "does not fit: needs" in r.stdout and (tmp_path / "dry_run.json").exists()
