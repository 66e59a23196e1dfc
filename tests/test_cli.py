"""The command line: bad flags give one clear line and a non-zero exit."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "muse_jax.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


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
