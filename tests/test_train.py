"""End-to-end training on a tiny config: metrics, checkpoints, exact resume, eval and generate."""

import json
import os

import pytest

from muse_jax.data.errors import DataError
from muse_jax.settings import Settings
from muse_jax.train.errors import NoCheckpoint
from muse_jax.train import run as run_module
from muse_jax.modes.train import train
from muse_jax.train.metrics import DelayedLog
from muse_jax.modes.generate import generate_from_checkpoint
from muse_jax.modes.evaluate import evaluate_checkpoint


def losses(workdir: str) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


class Interrupt(Exception):
    pass


class StopAfter:
    """A data iterator that raises after n batches, like a run killed mid-way."""

    def __init__(self, inner, n: int):
        self.inner, self.left = inner, n

    def __next__(self):
        if self.left == 0:
            raise Interrupt
        self.left -= 1
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def interrupt_after(n_batches: int, make_dataset):
    class Dataset:
        def __init__(self, *args, **kwargs):
            self.ds = make_dataset(*args, **kwargs)

        def __iter__(self):
            return StopAfter(iter(self.ds), n_batches)

    return Dataset


def test_metrics_rows_and_resume_is_exact(tiny_config, monkeypatch, capsys):
    reference = tiny_config.copy_and_resolve_references()
    reference.workdir = tiny_config.workdir + "_reference"
    train(Settings.from_config(reference), "日本")
    expected = losses(reference.workdir)
    assert sorted(expected) == list(range(1, 9))

    with open(os.path.join(reference.workdir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    train_row = next(r for r in rows if "loss" in r)
    assert {"step", "loss", "lr", "grad_norm_raw", "grad_norm_clipped", "skipped_steps", "tokens_per_sec"} <= set(train_row)
    assert any("val_loss" in r for r in rows)

    # Killed after 6 steps (last checkpoint at 4), then the same command again: resumes at 4.
    original = run_module.train_dataset
    monkeypatch.setattr(run_module, "train_dataset", interrupt_after(6, original))
    with pytest.raises(Interrupt):
        train(Settings.from_config(tiny_config), "日本", tiny_config.to_json())
    monkeypatch.setattr(run_module, "train_dataset", original)
    assert max(losses(tiny_config.workdir)) > 4  # rows past the last checkpoint, to be re-logged
    train(Settings.from_config(tiny_config), "日本", tiny_config.to_json())
    assert "resumed from step 4" in capsys.readouterr().out
    assert losses(tiny_config.workdir) == expected  # exactly equal, every step
    # Started again when finished, with fewer steps: it says so, samples, and records this start too.
    tiny_config.train.steps = 6
    train(Settings.from_config(tiny_config), "日本", tiny_config.to_json())
    assert "nothing to train: the latest checkpoint is at step 8 and train.steps is 6" in capsys.readouterr().out
    history = os.path.join(tiny_config.workdir, "configs")
    assert sorted(os.listdir(history)) == ["start-0000000.json", "start-0000004.json", "start-0000008.json"]
    with open(os.path.join(history, "start-0000004.json"), encoding="utf-8") as f:
        assert json.load(f)["train"]["steps"] == 8
    with open(os.path.join(tiny_config.workdir, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["train"]["steps"] == 6


def test_eval_and_generate_modes_read_the_checkpoint(tiny_config, tmp_path, capsys):
    tiny_config.train.steps = 4
    train(Settings.from_config(tiny_config), "日本")
    result = evaluate_checkpoint(Settings.from_config(tiny_config))
    assert result["step"] == 4 and result["val_loss"] > 0

    text_file = tmp_path / "held_out.txt"
    text_file.write_text("日本語の文章を評価する。" * 40, encoding="utf-8")
    on_file = evaluate_checkpoint(Settings.from_config(tiny_config), str(text_file))
    assert on_file["eval_file"] == str(text_file) and on_file["val_loss"] > 0
    assert on_file["val_loss"] != result["val_loss"]
    text_file.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(DataError, match="held_out.txt .byte 0.: not UTF-8"):
        evaluate_checkpoint(Settings.from_config(tiny_config), str(text_file))
    text_file.write_text("短い文。", encoding="utf-8")  # fewer tokens than one window: one shorter window
    short = evaluate_checkpoint(Settings.from_config(tiny_config), str(text_file))
    assert short["seq_len"] == short["targets"] < tiny_config.train.seq_len and short["val_loss"] > 0
    text = generate_from_checkpoint(Settings.from_config(tiny_config), "日本語")
    assert text.startswith("日本語")


def test_no_checkpoint_is_a_clear_error_before_anything_is_written(tiny_config):
    with pytest.raises(NoCheckpoint, match="no checkpoint"):
        evaluate_checkpoint(Settings.from_config(tiny_config))
    assert not os.path.exists(tiny_config.workdir)  # nothing prepared


def test_device_memory_fields_absent_on_cpu_and_measured_where_the_backend_keeps_stats(tiny_config, monkeypatch):
    """CPU: neither field appears (absent, not zero). A backend with allocator statistics (faked
    here): every row carries device_peak_gib, step 0 the compiled step's prediction, and the
    ahead-of-time compiled executable trains exactly like the jitted step."""
    from muse_jax.train import device_memory

    tiny_config.train.steps = 4
    reference = tiny_config.copy_and_resolve_references()
    reference.workdir = tiny_config.workdir + "_cpu"
    train(Settings.from_config(reference), "日本")
    with open(os.path.join(reference.workdir, "metrics.jsonl"), encoding="utf-8") as f:
        cpu_rows = [json.loads(line) for line in f]
    assert not any({"device_peak_gib", "device_peak_estimate_gib"} & set(r) for r in cpu_rows)

    monkeypatch.setattr(device_memory, "device_peak_gib", lambda: 0.25)
    train(Settings.from_config(tiny_config), "日本")
    with open(os.path.join(tiny_config.workdir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert all(r["device_peak_gib"] == 0.25 for r in rows)
    estimate = [r for r in rows if "device_peak_estimate_gib" in r]
    assert len(estimate) == 1 and estimate[0]["step"] == 0 and estimate[0]["device_peak_estimate_gib"] > 0
    assert losses(tiny_config.workdir) == losses(reference.workdir)


class FakeRows:
    def __init__(self):
        self.rows = []

    def write(self, step, values):
        self.rows.append((step, values))

    def print(self, step, values):
        pass


class Ready:
    def is_ready(self):
        return True


def test_tokens_per_sec_times_completed_work_when_dispatch_is_synchronous():
    """Each step takes 1 s and its dispatch returns only when it is done (as with host offload):
    every logged interval, the last included, must read 1 step per second (it read ∞ at the end)."""
    now = [0.0]
    rows = FakeRows()
    log = DelayedLog(rows, rows, tokens_per_step=1, step=0, clock=lambda: now[0])
    steps = 5
    for step in range(1, steps + 1):
        now[0] += 1.0  # the dispatch ran the whole step
        log.dispatched(step, Ready())
        log.flush()
        log.defer(step, {})
        if step == steps:
            log.flush()
    assert [s for s, _ in rows.rows] == list(range(1, steps + 1))
    assert [v["tokens_per_sec"] for _, v in rows.rows] == [1.0] * steps
