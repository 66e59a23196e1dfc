"""The command line: bad flags give one clear line and a non-zero exit."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "muse_jax.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def config_module(tmp_path, cfg) -> str:
    """A config file whose get_config() returns `cfg` (a test's config, for a subprocess)."""
    path = tmp_path / "test_config.py"
    path.write_text(f"import ml_collections\n\n\ndef get_config():\n"
                    f"    return ml_collections.ConfigDict({cfg.to_dict()!r})\n", encoding="utf-8")
    return str(path)


def test_unknown_config_key():
    r = run_cli("--config", "configs/tiny_ja.py", "--config.train.stepz=3")
    assert r.returncode != 0
    assert r.stderr.strip() == "error: unknown config key 'train.stepz' (did you mean 'steps'?)"


def test_wrongly_typed_override():
    r = run_cli("--config", "configs/tiny_ja.py", "--config.train.steps=abc")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--config.train.steps=abc" in lines[0] and lines[0].startswith("error:")


def test_missing_config_file():
    r = run_cli("--config", "configs/does_not_exist.py")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "configs/does_not_exist.py" in lines[0]


def test_out_of_range_value_is_one_line(tmp_path, tiny_config):
    """A value the config's types accept but the run cannot use (a ConfigError, raised by the
    settings before anything is prepared or written) is one line naming the key, exit status 2."""
    r = run_cli("--config", config_module(tmp_path, tiny_config), "--config.train.label_smoothing=1.5")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == "error: train.label_smoothing must be in [0, 1), got 1.5"
    assert not os.path.exists(tiny_config.workdir)


def test_errors_before_work_leave_nothing_behind(tmp_path, tiny_config):
    """`--mode=eval` on an empty workdir and an unknown model kind fail (exit 2, one line) before
    the corpus is prepared: neither the workdir nor the data cache is created. A run shorter than
    the warmup is no error: one line says how long the warmup becomes."""
    tiny_config.data.cache_dir = str(tmp_path / "cache")  # a cache of its own: nothing may appear in it
    config = config_module(tmp_path, tiny_config)
    r = run_cli("--config", config, "--mode=eval", "--config.train.steps=2")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "note: optim.warmup_steps=2 is not shorter than train.steps=2: warming up for 0 steps instead (10% of the run)",
        f"error: no checkpoint in {tiny_config.workdir}/checkpoints; train first"]
    r = run_cli("--config", config, "--config.model.kind=lstm")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: model.kind must be one of ('bk', 'transformer'), got 'lstm'"
    assert not os.path.exists(tiny_config.workdir) and not os.path.exists(tiny_config.data.cache_dir)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_generate_needs_a_prompt():
    r = subprocess.run(["make", "-n", "generate"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "make generate needs a prompt" in r.stderr
    r = subprocess.run(["make", "-s", "generate", "PYTHON=echo", "PROMPT=日本語の"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "--mode=generate --prompt=日本語の" in r.stdout
