"""The command line: bad flags give one clear line and a non-zero exit."""

import os
import subprocess
import sys

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
    r = run_cli("--config", config_module(tmp_path, tiny_config), "--config.optim.warmup_steps=8")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == "error: optim.warmup_steps must be in [0, train.steps), got 8"
    assert not os.path.exists(tiny_config.workdir)
