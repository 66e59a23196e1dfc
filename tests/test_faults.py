"""Faults a hostile operator causes (issue 19): diverging learning rates, corrupted checkpoints,
cut-off metrics, full disks, two runs on one workdir, SIGTERM / SIGINT / SIGKILL, damaged data.
A real process where the fault needs one (signals, locks, exit statuses, file-size limits)."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tests.conftest import make_tiny_config
from test_cli import ROOT, config_module

from muse_jax.data import prepare as prepare_module
from muse_jax.data.errors import DataError
from muse_jax.data.manifest import read_manifest
from muse_jax.data.packing import PackedWindowsIterDataset
from muse_jax.data.prepared import load_prepared, prepared_for_training
from muse_jax.data.shards import read_records
from muse_jax.modes.train import train
from muse_jax.settings import Settings
from muse_jax.train import preemption
from muse_jax.train.checkpoint import Checkpointer, NonFiniteState
from muse_jax.train.checksums import MANIFEST, write_manifest
from muse_jax.train.errors import Diverged, NoUsableCheckpoint, WriteError
from muse_jax.train.metrics import MetricsLog, truncate_jsonl
from muse_jax.train.run import Run


def fault_config(tmp_path, tiny_sources, data_cache_dir, name="run"):
    """The smallest run: width 16, 1 layer, seq 16, batch 2, 8 steps, a checkpoint every 2."""
    c = make_tiny_config(tmp_path, tiny_sources, data_cache_dir)
    c.workdir = str(tmp_path / name)
    c.model.d_model, c.model.n_layers, c.model.bk.channels = 16, 1, 4
    c.train.batch_size, c.train.seq_len, c.train.eval_batches = 2, 16, 1
    c.train.checkpoint_every, c.train.keep_checkpoints = 2, 3
    c.sample.max_new_tokens = 2
    return c


def losses(workdir: str) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_sources, data_cache_dir):
    """A finished 8-step run (checkpoints 4, 6, 8), never modified: tests copy it."""
    cfg = fault_config(tmp_path_factory.mktemp("faults"), tiny_sources, data_cache_dir, "trained")
    train(Settings.from_config(cfg), "日本")
    return cfg


@pytest.fixture
def copied(trained, tmp_path):
    cfg = trained.copy_and_resolve_references()
    cfg.workdir = str(tmp_path / "copy")
    shutil.copytree(trained.workdir, cfg.workdir)
    return cfg


def start_cli(tmp_path, cfg, *args: str, max_file_kib: int = 0) -> subprocess.Popen:
    """The command line on `cfg`, started, with the test session's XLA cache (the child compiles
    nothing the session has); `max_file_kib` > 0: no file may grow past it (`ulimit -f`: writes
    fail with EFBIG, as on a full disk), and no XLA cache (its writes would fail too)."""
    command = [sys.executable, "-m", "muse_jax.main", "--config", config_module(tmp_path, cfg), *args]
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(jax.config.jax_compilation_cache_dir),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    if max_file_kib:
        command, env = ["sh", "-c", f'ulimit -f {max_file_kib} && exec "$0" "$@"', *command], None
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line and not line.startswith(("[muse_jax.data]", "warning:"))]


def flip_bytes(path: str, count: int = 64) -> None:
    data = bytearray(open(path, "rb").read())
    start = len(data) // 3
    for i in range(start, min(len(data), start + count)):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))


def largest_file(directory: str) -> str:
    return max((p for p in glob.glob(os.path.join(directory, "**"), recursive=True) if os.path.isfile(p)),
               key=os.path.getsize)


# --- a: numbers that cannot train (config keys: tests/test_settings.py), runs that diverge ----------

@pytest.mark.parametrize("weight", ["Infinity", "NaN", "1e999"])
def test_a_non_finite_source_weight_is_rejected(tmp_path, weight):
    (tmp_path / "a.txt").write_text("text\n", encoding="utf-8")
    manifest = tmp_path / "m.json"
    manifest.write_text(f'{{"sources": [{{"kind": "cc100", "path": "a.txt", "weight": {weight}}}]}}', encoding="utf-8")
    with pytest.raises(DataError, match="source 1: 'weight' must be a finite number > 0"):
        read_manifest(str(manifest))


def test_a_diverged_run_stops_without_saving(tmp_path, tiny_sources, data_cache_dir):
    """Every step skipped (a threshold no gradient is under): after max_skipped_in_a_row of them
    the run stops with Diverged (exit status 3) and has written no checkpoint."""
    cfg = fault_config(tmp_path, tiny_sources, data_cache_dir)
    cfg.optim.grad_skip_threshold = 1e-30
    cfg.train.max_skipped_in_a_row, cfg.train.checkpoint_every = 3, 5
    with pytest.raises(Diverged, match=r"3 optimizer steps in a row skipped up to step 3 .*no checkpoint was saved"):
        train(Settings.from_config(cfg), "日本")
    assert Diverged.exit_code == 3
    assert not glob.glob(os.path.join(cfg.workdir, "checkpoints", "*"))
    assert sorted(losses(cfg.workdir)) == [1, 2, 3]  # every row up to the stop was logged


# --- b: checkpoints verified on save and restore ---------------------------------------------------

def damage_state_file(step_dir):
    flip_bytes(largest_file(os.path.join(step_dir, "state")))


def truncate_state_file(step_dir):
    path = largest_file(os.path.join(step_dir, "state"))
    os.truncate(path, os.path.getsize(path) // 2)


def remove_state_item(step_dir):
    shutil.rmtree(os.path.join(step_dir, "state"))


def damage_without_manifest(step_dir):
    """An older checkpoint (no manifest): Orbax's restore must notice the damage itself."""
    os.remove(os.path.join(step_dir, MANIFEST))
    truncate_state_file(step_dir)


@pytest.mark.parametrize("damage", [damage_state_file, truncate_state_file, remove_state_item, damage_without_manifest])
def test_a_damaged_checkpoint_is_set_aside_and_the_previous_one_resumes(copied, damage, capsys):
    ckpt = os.path.join(copied.workdir, "checkpoints")
    damage(os.path.join(ckpt, "8"))
    run = Run(Settings.from_config(copied))
    assert run.restore_latest(set_aside=True) and int(run.state.step) == 6
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "checkpoint step 8" in warnings[0] and "is unusable" in warnings[0]
    assert sorted(os.listdir(ckpt)) == ["4", "6"]  # nothing deleted: step 8 moved for inspection
    assert os.listdir(os.path.join(copied.workdir, "checkpoints_unusable")) == ["8"]


def test_resuming_after_a_damaged_checkpoint_gives_the_same_losses(copied, trained, capsys):
    damage_state_file(os.path.join(copied.workdir, "checkpoints", "8"))
    shutil.rmtree(os.path.join(copied.workdir, "checkpoints", "6"))
    train(Settings.from_config(copied), "日本")
    assert "resumed from step 4" in capsys.readouterr().out
    assert losses(copied.workdir) == losses(trained.workdir)
    assert sorted(os.listdir(os.path.join(copied.workdir, "checkpoints"))) == ["4", "6", "8"]


def test_no_checkpoint_with_a_nan_is_written_or_restored(copied):
    settings = Settings.from_config(copied)
    run = Run(settings)
    run.restore_latest()
    first = jax.tree_util.tree_leaves_with_path(run.state.params)[0][0]
    poisoned = run.state._replace(params=jax.tree_util.tree_map_with_path(
        lambda path, x: x.at[(0,) * x.ndim].set(jnp.nan) if path == first else x, run.state.params))
    with pytest.raises(NonFiniteState, match="non-finite values; not saved"):
        run.checkpointer.save(10, poisoned, run.data_state)
    assert not os.path.exists(run.checkpointer.step_dir(10))
    # Written behind the checkpointer's back, with a valid manifest: restoring still refuses it.
    run.checkpointer._manager.save(10, args=ocp.args.Composite(
        state=ocp.args.StandardSave(poisoned), data=ocp.args.JsonSave(run.data_state)), force=True)
    write_manifest(run.checkpointer.step_dir(10))
    again = Run(settings)
    assert again.restore_latest() and int(again.state.step) == 8


def test_no_usable_checkpoint_is_an_error_and_nothing_is_moved(copied):
    ckpt = os.path.join(copied.workdir, "checkpoints")
    for step in ("4", "6", "8"):
        remove_state_item(os.path.join(ckpt, step))
    with pytest.raises(NoUsableCheckpoint, match="steps 8, 6, 4 failed their checks"):
        Run(Settings.from_config(copied)).restore_latest(set_aside=True)
    assert sorted(os.listdir(ckpt)) == ["4", "6", "8"]


def test_a_step_without_manifest_never_pushes_out_the_last_verified_one(copied):
    ckpt = os.path.join(copied.workdir, "checkpoints")
    os.remove(os.path.join(ckpt, "8", MANIFEST))  # killed between Orbax's commit and the manifest
    checkpointer = Checkpointer(ckpt, keep=2)
    checkpointer._delete_old()
    assert checkpointer.steps() == [4, 6, 8]  # verified: 4, 6 — both kept
    checkpointer.keep = 1
    checkpointer._delete_old()
    assert checkpointer.steps() == [6, 8]


# --- c: metrics.jsonl and write errors ------------------------------------------------------------

def test_a_cut_off_last_metrics_row_is_dropped_with_a_warning(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "loss": 4.0}\n{"step": 3, "lo', encoding="utf-8")
    truncate_jsonl(str(path), 2)
    assert path.read_text(encoding="utf-8") == '{"step": 1, "loss": 5.0}\n{"step": 2, "loss": 4.0}\n'
    assert "metrics.jsonl:3: dropped a cut-off last row" in capsys.readouterr().err
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"metrics.jsonl:2: damaged row"):
        truncate_jsonl(str(path), 3)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_workdir_is_one_error_naming_the_file(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n', encoding="utf-8")
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(WriteError, match=re.escape(str(tmp_path / "metrics.jsonl"))):
            MetricsLog(str(tmp_path), 0)
    finally:
        os.chmod(tmp_path, 0o755)


def test_a_full_disk_is_one_line_naming_the_checkpoint(copied, tmp_path):
    """Files limited to 8 KiB (writes fail as on a full disk): the resumed run
    cannot write its checkpoint; one line naming it, exit status 1, Orbax's temporary folder
    cleaned up by the next start."""
    copied.train.steps = 10
    p = start_cli(tmp_path, copied, max_file_kib=8)
    _, stderr = p.communicate(timeout=300)
    assert p.returncode == 1, stderr
    assert len(error_lines(stderr)) == 1, stderr
    assert re.match(r"error: \S+/checkpoints/10: cannot write the checkpoint \(", error_lines(stderr)[0])
    assert Checkpointer.latest_in(os.path.join(copied.workdir, "checkpoints")) == 8


# --- d, e: one run per workdir; SIGTERM / SIGINT save ----------------------------------------------

def test_a_second_run_is_refused_and_sigterm_saves_the_step(trained, tmp_path):
    cfg = trained.copy_and_resolve_references()
    cfg.workdir = str(tmp_path / "long")
    cfg.train.steps, cfg.train.checkpoint_every, cfg.train.log_every = 100_000, 100_000, 1
    first = start_cli(tmp_path, cfg)
    metrics = os.path.join(cfg.workdir, "metrics.jsonl")
    deadline = time.time() + 240
    while not (os.path.exists(metrics) and len(losses(cfg.workdir)) >= 2):
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.2)
    second = subprocess.run([sys.executable, "-m", "muse_jax.main", "--config", config_module(tmp_path, cfg)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode == 4
    assert error_lines(second.stderr) == [f"error: {cfg.workdir} is in use by another run (process {first.pid} on "
                                          f"{os.uname().nodename}, lock {cfg.workdir}/.lock); wait for it to end "
                                          "or choose another --config.workdir"]
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 143, stderr
    step = int(re.search(r"stopped after step (\d+)", stderr).group(1))
    assert os.path.isfile(os.path.join(cfg.workdir, "checkpoints", str(step), MANIFEST))
    assert max(losses(cfg.workdir)) <= step


def test_a_second_signal_exits_at_once(monkeypatch, capsys):
    exits = []
    monkeypatch.setattr(preemption.os, "_exit", exits.append)
    with preemption.StopSignals() as stop:
        stop._handle(signal.SIGINT, None)
        assert stop.requested(1) == signal.SIGINT and not exits
        stop._handle(signal.SIGINT, None)
    assert exits == [130]
    assert "SIGINT again: exiting now" in capsys.readouterr().err


# --- e: prepare cleans up after itself --------------------------------------------------------------

def children_of(pid: int) -> list[int]:
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.split("/")[2]))
    return found


def alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds worker processes in /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_prepare_leaves_no_workers_and_no_temporary_folder(tmp_path, tiny_config, sig):
    out_dir = tmp_path / "prepared"
    p = start_cli(tmp_path, tiny_config, "--mode=prepare", f"--config.data.out_dir={out_dir}", "--config.data.workers=2")
    deadline = time.time() + 60
    while len(workers := children_of(p.pid)) < 2 or not glob.glob(str(tmp_path / ".prepared.tmp-*")):
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.05)
    p.send_signal(sig)
    p.communicate(timeout=60)
    assert p.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    deadline = time.time() + 10
    while any(alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers)
    left = glob.glob(str(tmp_path / ".prepared.tmp-*"))
    if sig == signal.SIGTERM:
        assert not left
    else:  # killed outright: the next prepare beside it removes the folder
        assert len(left) == 1
        prepare_module._remove_stale(str(out_dir))
        assert not glob.glob(str(tmp_path / ".prepared.tmp-*"))


# --- f: the small ones ------------------------------------------------------------------------------

@pytest.fixture
def prepared_copy(tiny_config, tmp_path):
    data = prepared_for_training(Settings.from_config(tiny_config).data)
    copy = tmp_path / "prepared"
    shutil.copytree(data.directory, copy)
    return copy


def edit_meta(directory, **changes):
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    meta.update(changes)
    (directory / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def test_meta_json_with_infinity_or_a_too_small_dtype_is_refused(prepared_copy):
    meta = json.loads((prepared_copy / "meta.json").read_text(encoding="utf-8"))
    meta["sources"][0]["weight"] = float("inf")
    (prepared_copy / "meta.json").write_text(json.dumps(meta), encoding="utf-8")  # Python writes Infinity
    with pytest.raises(DataError, match="meta.json: damaged .non-standard JSON number Infinity"):
        load_prepared(str(prepared_copy))
    meta["sources"][0]["weight"] = 1.0
    meta["dtype"] = "uint8"
    (prepared_copy / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(DataError, match="meta.json: dtype uint8 cannot hold the token ids of a vocabulary of 1536"):
        load_prepared(str(prepared_copy))


def test_a_damaged_shard_is_an_error_naming_it(prepared_copy):
    shard = sorted(glob.glob(str(prepared_copy / "train" / "*.array_record")))[0]
    flip_bytes(shard)
    with pytest.raises(DataError, match=re.escape(shard) + ": damaged shard"):
        records = read_records([shard])
        for i in range(len(records)):
            records[i]


def test_a_restored_data_position_beyond_its_document_is_an_error():
    docs = grain.MapDataset.source([np.arange(10, dtype=np.int32)] * 4).to_iter_dataset()
    iterator = iter(PackedWindowsIterDataset(docs, 5))
    next(iterator)
    state = iterator.get_state()
    fresh = iter(PackedWindowsIterDataset(docs, 5))
    fresh.set_state({**state, "position": 50})
    with pytest.raises(DataError, match="token 50 of a document of 10 tokens. lies beyond the prepared data"):
        next(fresh)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_passes_the_prompt_as_text_not_as_shell(tmp_path):
    prompt = f'x"; touch {tmp_path}/pwned; echo "`touch {tmp_path}/pwned2`'
    r = subprocess.run(["make", "-s", "-C", ROOT, "generate", "PYTHON=echo", f"PROMPT={prompt}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(f"--mode=generate --prompt={prompt}")
    assert not os.listdir(tmp_path)
