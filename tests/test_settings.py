"""The settings layer: every config builds, every bad value is a ConfigError naming its key before
anything is prepared, ConfigError is raised nowhere else, and generation runs in compute_dtype."""

import glob
import importlib
import os
import re

import jax
import jax.numpy as jnp
import pytest
from test_cli import config_module, run_cli

from muse_jax.settings import ConfigError, Settings
from muse_jax.train.state import ModelSetup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py")))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_builds_its_settings(name):
    settings = Settings.from_config(importlib.import_module(f"configs.{name}").get_config())
    assert settings.train.window == settings.train.seq_len + 1


@pytest.mark.parametrize("key, value, message", [
    ("model.bk.scan_impl", "fast", "model.bk.scan_impl must be one of"),
    ("model.kind", "lstm", "model.kind must be one of"),
    ("optim.adamw.lr", float("inf"), "optim.adamw.lr must be a finite number > 0"),
    ("optim.adamw.lr", float("nan"), "optim.adamw.lr must be a finite number > 0"),
    ("optim.adamw.lr", 0.0, "optim.adamw.lr must be a finite number > 0"),
    ("optim.adamw.weight_decay", float("inf"), "optim.adamw.weight_decay must be a finite number"),
    ("optim.embed_lr_mult", float("nan"), "optim.embed_lr_mult must be > 0"),
    ("optim.bk_hyper_sgd.poincare_lr_mult", 0.0, "optim.bk_hyper_sgd.poincare_lr_mult and orthogonal_lr_mult"),
    ("optim.tsp.lr_scales", (1.5, 1.2, 1.0, 0.8, float("inf")), "optim.tsp.lr_scales[4] must be a finite number"),
    ("train.max_skipped_in_a_row", 0, "train.max_skipped_in_a_row must be >= 1"),
    ("optim.bk_hyper_sgd.poincare_params", "(", "optim.bk_hyper_sgd.poincare_params is not a regular expression"),
    ("train.compute_dtype", "float16", "train.compute_dtype must be one of"),
    ("mesh.data", -2, "mesh.data must be >= 1 or -1"),
    ("sample.top_p", 0.0, "sample.top_p must be in"),
    ("data.on_error", "ignore", "data.on_error must be"),
])
def test_a_bad_value_is_a_config_error_naming_its_key(tiny_config, key, value, message):
    section, _, leaf = key.rpartition(".")
    node = tiny_config
    for part in section.split("."):
        node = node[part]
    node[leaf] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_config(tiny_config)


def test_the_command_line_checks_before_it_prepares(tmp_path, tiny_config):
    """A typo in model.bk.scan_impl used to surface when the forward was first traced, after the
    data was prepared; now it is one line and exit 2, and the workdir is never created."""
    r = run_cli("--config", config_module(tmp_path, tiny_config), "--config.model.bk.scan_impl=fast")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: model.bk.scan_impl must be one of")
    assert not os.path.exists(tiny_config.workdir)


def test_config_error_is_raised_only_by_the_settings():
    offenders = []
    for path in glob.glob(os.path.join(ROOT, "muse_jax", "**", "*.py"), recursive=True):
        if os.sep + "settings" + os.sep in path:
            continue
        with open(path, encoding="utf-8") as f:
            if "raise ConfigError" in f.read():
                offenders.append(os.path.relpath(path, ROOT))
    assert not offenders


def test_generation_runs_in_the_compute_dtype(tiny_config):
    """The Generator the run builds casts the weights like evaluation does: bfloat16 matmuls in
    the prefill when train.compute_dtype = bfloat16 (it sampled in float32 before)."""
    tiny_config.train.compute_dtype = "bfloat16"
    setup = ModelSetup(Settings.from_config(tiny_config), 97)
    generator = setup.generator(Settings.from_config(tiny_config).sample, eos_id=3)
    params = setup.initial_params()
    tokens, start = jnp.ones((1, 8), jnp.int32), jnp.zeros((1,), jnp.int32)
    jaxpr = str(jax.make_jaxpr(lambda p: generator._prefill(p, tokens, start, max_len=12))(params))
    dots = [line for line in jaxpr.splitlines() if "dot_general" in line]
    assert dots and any("bf16" in line for line in dots)


def test_a_warmup_as_long_as_the_run_becomes_a_tenth_of_it(tiny_config):
    """`--config.train.steps=30` on a config with 50 warmup steps used to be an error; now the
    warmup is shortened to 10 % of the run, and the settings carry one line saying so."""
    tiny_config.train.steps, tiny_config.optim.warmup_steps = 30, 50
    s = Settings.from_config(tiny_config)
    assert s.optim.warmup_steps == 3
    assert s.notes == ("optim.warmup_steps=50 is not shorter than train.steps=30: warming up for 3 steps instead "
                       "(10% of the run)",)
    tiny_config.optim.warmup_steps = 29
    s = Settings.from_config(tiny_config)
    assert s.optim.warmup_steps == 29 and s.notes == ()


def test_prepared_data_is_cached_per_user_not_per_workdir(tiny_config, tmp_path, monkeypatch):
    """data.cache_dir = "": $MUSE_JAX_CACHE_DIR, else $XDG_CACHE_HOME/muse_jax, else
    ~/.cache/muse_jax; two workdirs share one prepared folder (keyed by the content hash)."""
    from muse_jax.data.prepared import out_dir_for
    from muse_jax.settings.data import CACHE_DIR_ENV

    tiny_config.data.cache_dir = ""
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "mine"))
    first = Settings.from_config(tiny_config).data
    tiny_config.workdir = str(tmp_path / "another_run")
    second = Settings.from_config(tiny_config).data
    assert first.cache_dir == second.cache_dir == str(tmp_path / "mine")
    assert out_dir_for(first) == out_dir_for(second)
    monkeypatch.delenv(CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Settings.from_config(tiny_config).data.cache_dir == str(tmp_path / "xdg" / "muse_jax")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings.from_config(tiny_config).data.cache_dir == str(tmp_path / "home" / ".cache" / "muse_jax")
