"""The experiments' statistics and sweep bookkeeping against plain references, and every
experiment script runnable as `python -m experiments.<name>` from the repository root."""

import glob
import json
import math
import os
import runpy
import subprocess
import sys

import pytest

from experiments.learning_efficiency import loss_ladder, summarize, tokens_to_reach
from experiments.stats import paired_difference, sample_sd, t_quantile
from experiments.sweep import ROOT, RunSpec, append_jsonl, read_jsonl


def experiment_sources() -> dict[str, str]:
    """{module name: source} of every file in experiments/."""
    sources = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py"))):
        with open(path, encoding="utf-8") as f:
            sources[os.path.basename(path)[:-3]] = f.read()
    return sources


SCRIPTS = [name for name, source in experiment_sources().items() if 'if __name__ == "__main__":' in source]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_runs_as_a_module(name, monkeypatch, capsys):
    """`python -m experiments.<name> --help` (runpy is what -m runs) prints the usage."""
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    monkeypatch.delitem(sys.modules, f"experiments.{name}", raising=False)  # run fresh, as -m does
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module(f"experiments.{name}", run_name="__main__", alter_sys=True)
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_module_command_line_from_the_repository_root():
    out = subprocess.run([sys.executable, "-m", "experiments.ablation", "--help"], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": ""}, check=True).stdout
    assert out.startswith("usage: python -m experiments.ablation")


def test_no_script_edits_sys_path():
    assert [name for name, source in experiment_sources().items() if "sys.path" in source] == []


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_paired_difference_by_hand():
    xs, ys = [1.0, 2.0, 4.0], [0.5, 1.0, 2.0]
    d = [0.5, 1.0, 2.0]
    m = sum(d) / 3
    s = math.sqrt(sum((x - m) ** 2 for x in d) / 2)
    out = paired_difference(xs, ys)
    assert out["mean"] == pytest.approx(m)
    assert out["sd"] == pytest.approx(s) == pytest.approx(sample_sd(d))
    half = 4.3027 * s / math.sqrt(3)
    assert out["ci_low"] == pytest.approx(m - half, abs=1e-3)
    assert out["ci_high"] == pytest.approx(m + half, abs=1e-3)
    with pytest.raises(ValueError):
        paired_difference([1.0], [2.0])


def test_jsonl_append_read_and_torn_tail(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    assert read_jsonl(path) == []
    append_jsonl(path, {"name": "a"})
    append_jsonl(path, {"name": "b"})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"name": "c", "val')  # a crash while appending
    assert [r["name"] for r in read_jsonl(path)] == ["a", "b"]
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"name": "a"}) + "\nnot json\n" + json.dumps({"name": "b"}) + "\n")
    with pytest.raises(SystemExit, match="runs.jsonl:2"):
        read_jsonl(path)


def test_run_command_is_the_project_cli():
    spec = RunSpec("none/seed0", "configs/ablation_ja.py", (("seed", 3), ("model.bk.prime_bump", True)))
    cmd = spec.command("/w", "/d")
    assert cmd[1:4] == ["-m", "muse_jax.main", "--config=configs/ablation_ja.py"]
    assert cmd[4:] == ["--config.seed=3", "--config.model.bk.prime_bump=True", "--config.workdir=/w",
                       "--config.data.cache_dir=/d"]


def test_tokens_to_reach_and_ladder():
    curve = [{"tokens": 100, "val_loss": 7.9}, {"tokens": 200, "val_loss": 7.4}, {"tokens": 300, "val_loss": 7.1}]
    assert tokens_to_reach(curve, 7.5) == 200
    assert tokens_to_reach(curve, 7.0) is None
    assert loss_ladder([{"curve": curve}]) == [7.75, 7.5, 7.25]


def test_learning_efficiency_summary_over_seeds():
    def rows(bk: list[float], transformer: list[float]) -> list[dict]:
        curve = lambda losses: [{"step": i, "tokens": 100 * i, "val_loss": x} for i, x in enumerate(losses, 1)]
        return [{"model": "bk", "params": 10, "curve": curve(bk)},
                {"model": "transformer", "params": 11, "curve": curve(transformer)}]

    s = summarize({0: rows([7.8, 7.0], [7.9, 7.2]), 1: rows([8.0, 7.2], [7.9, 7.6])}, 200, 100)
    bk = s["models"]["bk"]
    assert [p["val_loss"] for p in bk["curve"]] == pytest.approx([7.9, 7.1])
    assert bk["curve"][0]["val_loss_sd"] == pytest.approx(0.1 * 2 ** 0.5)
    assert bk["final_val_loss_per_seed"] == [7.0, 7.2] and s["models"]["transformer"]["final_val_loss"] == 7.4
    assert s["final_difference_bk_minus_transformer"]["mean"] == pytest.approx(-0.3)
    assert {"val_loss": 7.5, "bk": 200, "transformer": 200, "bk_over_transformer": 1.0} in s["tokens_to_reach"]
