"""A workdir keeps its config history (one file per start) and refuses a config of another model
or data before any work (resuming and "nothing to train": tests/test_train.py)."""

import copy
import json
import os

import pytest
from test_cli import config_module, run_cli

from configs.tiny_ja import get_config
from muse_jax.train.workdir_config import (FIXED_KEYS, WorkdirMismatch, check_same_run, differences, flat,
                                           record_start)


def test_every_fixed_key_is_a_config_key():
    """A renamed key would silently leave the check: every key it compares exists."""
    assert set(FIXED_KEYS) <= set(flat(json.loads(get_config().to_json())))
    assert "model.d_model" in FIXED_KEYS and "data.vocab_size" in FIXED_KEYS and "data.workers" not in FIXED_KEYS


def test_differences_are_the_model_data_and_state_keys_only():
    saved = json.loads(get_config().to_json())
    new = copy.deepcopy(saved)
    new["model"]["d_model"], new["data"]["vocab_size"] = 64, 8000  # change the model and the data
    new["train"]["steps"], new["optim"]["adamw"]["lr"], new["data"]["workers"] = 5, 1e-4, 3  # free to change
    new["model"]["bk"]["scan_impl"], new["sample"]["seed"], new["mesh"]["fsdp"] = "sequential", 7, 1
    assert differences(saved, new) == [("model.d_model", 128, 64), ("data.vocab_size", 4096, 8000)]
    new = copy.deepcopy(saved)
    new["train"]["ema_decay"] = 0.99  # the EMA switched on: the checkpoint would lack it
    assert differences(saved, new) == [("train.ema_decay", 0.0, 0.99)]
    saved["train"]["ema_decay"] = 0.9  # only its value changes
    assert differences(saved, new) == []


def test_each_start_is_recorded_and_config_json_is_the_latest(tmp_path):
    first, second = get_config(), get_config()
    second.train.steps = 900
    record_start(str(tmp_path), 0, first.to_json())
    record_start(str(tmp_path), 600, second.to_json())
    assert sorted(os.listdir(tmp_path / "configs")) == ["start-0000000.json", "start-0000600.json"]
    assert json.loads((tmp_path / "configs" / "start-0000000.json").read_text())["train"]["steps"] == 600
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 900
    assert sorted(os.listdir(tmp_path)) == ["config.json", "configs"]  # no temporary file left


def test_another_model_or_data_in_the_workdir_is_an_error_before_any_work(tmp_path, tiny_config):
    """One line naming each key and both values, exit 2, the workdir untouched; the check waits
    for a checkpoint (a start that saved none binds nothing) and ignores keys free to change."""
    config = config_module(tmp_path, tiny_config)
    workdir = tiny_config.workdir
    record_start(workdir, 0, tiny_config.to_json())
    tiny_config.model.d_model = 64
    check_same_run(workdir, tiny_config.to_json())  # no checkpoint yet: nothing to protect
    os.makedirs(os.path.join(workdir, "checkpoints", "4"))
    with pytest.raises(WorkdirMismatch):
        check_same_run(workdir, tiny_config.to_json())
    before = sorted(os.listdir(workdir))
    r = run_cli("--config", config, "--config.model.d_model=64", "--config.data.vocab_size=2048",
                "--config.train.steps=20", "--config.data.workers=1")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"error: workdir {workdir} holds a run of another model or data ({workdir}/config.json): "
        "model.d_model is 32 there, 64 now; data.vocab_size is 1536 there, 2048 now. "
        "Use another workdir, or set the value back")
    assert sorted(os.listdir(workdir)) == before
    r = run_cli("--config", config, "--mode=eval", "--config.model.kind=transformer")
    assert r.returncode == 2 and "model.kind is 'bk' there, 'transformer' now" in r.stderr


def test_a_manifest_compares_by_its_text(tmp_path):
    """A moved clone (another path to the same manifest text, or the old path gone) resumes; a
    manifest with other text is another run."""
    saved = json.loads(get_config().to_json())
    same = tmp_path / "moved.json"
    same.write_text(open(saved["data"]["manifest"], encoding="utf-8").read(), encoding="utf-8")
    new = copy.deepcopy(saved)
    new["data"]["manifest"] = str(same)
    assert differences(saved, new) == []
    gone = copy.deepcopy(saved)
    gone["data"]["manifest"] = str(tmp_path / "deleted.json")
    assert differences(gone, new) == []
    same.write_text('[{"kind": "cc100", "path": "other.txt", "weight": 1}]', encoding="utf-8")
    assert [key for key, _, _ in differences(saved, new)] == ["data.manifest"]
