"""Scale-out on 8 forced CPU devices (in subprocesses: the device count is fixed when JAX starts):
a data=2 × fsdp=4 mesh trains like one device, its state really is sharded, its checkpoint
resumes on 1 and on 4 devices with the same losses, and two processes of 4 devices each
(jax.distributed on localhost) train like one process of 8."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from muse_jax.modes.train import train
from muse_jax.settings import Settings
from tests.conftest import make_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4

# Runs in a fresh interpreter with N devices: trains every config given (JSON in argv), then
# restores each run's latest checkpoint onto its mesh and reports the state's placement.
WORKER = r"""
import json, sys
import jax
from configs.tiny_ja import get_config
from muse_jax.train.run import Run
from muse_jax.settings import Settings
from muse_jax.modes.train import train

def apply(c, d):
    for k, v in d.items():
        if isinstance(v, dict):
            apply(c[k], v)
        else:
            c[k] = tuple(v) if isinstance(c[k], tuple) else v

out = {"runs": []}  # jax.device_count() only after train: it joins the processes first
for flat in json.loads(sys.argv[1]):
    cfg = get_config()
    apply(cfg, flat)
    train(Settings.from_config(cfg), "日本")
    run = Run(Settings.from_config(cfg))
    run.restore_latest()
    leaves = jax.tree_util.tree_leaves_with_path(run.state)
    out["runs"].append({
        "mesh": dict(run.setup.mesh.shape),
        "leaves": [{"path": jax.tree_util.keystr(p), "shape": list(x.shape), "spec": list(x.sharding.spec),
                    "shard_shape": list(x.addressable_shards[0].data.shape),
                    "devices": len(x.sharding.device_set)} for p, x in leaves],
    })
out["devices"] = jax.device_count()
print("RESULT " + json.dumps(out))
"""


def on_devices(n: int, configs: list, processes: int = 1) -> dict:
    """Runs WORKER on `processes` processes of `n` devices each; process 0's result."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "JAX_PLATFORMS": "cpu"}
    if processes > 1:
        with socket.socket() as sock:
            sock.bind(("localhost", 0))
            port = sock.getsockname()[1]
        env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=str(processes))
    args = [sys.executable, "-c", WORKER, json.dumps([c.to_dict() for c in configs])]
    workers = [subprocess.Popen(args, cwd=ROOT, env={**env, "JAX_PROCESS_ID": str(i)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(processes)]
    outputs = [w.communicate(timeout=900) for w in workers]
    for w, (_, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-4000:]
    return {**json.loads(outputs[0][0].split("RESULT ", 1)[1]), "stdout": [out for out, _ in outputs]}


def metric_rows(workdir: str) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        for row in map(json.loads, f):
            rows.setdefault(row.pop("step"), {}).update(row)
    return rows


def assert_same_losses(got: dict, expected: dict, steps) -> None:
    for step in steps:
        for key in ("loss", "grad_norm_raw", "val_loss"):
            if key in expected[step]:
                np.testing.assert_allclose(got[step][key], expected[step][key], rtol=2e-5, err_msg=f"{key}@{step}")


def small(tiny_config, kind: str, name: str):
    """The tiny config on a 2 × 4 mesh: 4 steps, checkpoints at 2 and 4; BK with 2 micro-batches."""
    c = tiny_config.copy_and_resolve_references()
    c.workdir = os.path.join(os.path.dirname(tiny_config.workdir), name)
    c.model.kind = kind
    c.mesh.data, c.mesh.fsdp = 2, 4
    c.train.steps, c.train.checkpoint_every, c.train.eval_every = STEPS, 2, 2
    c.train.batch_size, c.train.grad_accum_steps = (16, 2) if kind == "bk" else (8, 1)
    return c


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory, tiny_sources, data_cache_dir):
    """BK and Transformer trained on data=2 × fsdp=4 in one 8-device process."""
    base = make_tiny_config(tmp_path_factory.mktemp("mesh"), tiny_sources, data_cache_dir)
    configs = {kind: small(base, kind, f"{kind}_8") for kind in ("bk", "transformer")}
    result = on_devices(8, list(configs.values()))
    assert result["devices"] == 8
    return configs, dict(zip(configs, result["runs"]))


@pytest.mark.parametrize("kind", ["bk", "transformer"])
def test_mesh_2x4_trains_like_one_device(eight_devices, tiny_config, kind):
    configs, _ = eight_devices
    one = small(tiny_config, kind, f"{kind}_1")
    one.mesh.data, one.mesh.fsdp = 1, 1
    train(Settings.from_config(one), "日本")
    expected = metric_rows(one.workdir)
    assert_same_losses(metric_rows(configs[kind].workdir), expected, range(1, STEPS + 1))


def test_parameters_and_optimizer_state_are_sharded(eight_devices):
    _, runs = eight_devices
    for run in runs.values():
        assert run["mesh"] == {"data": 2, "fsdp": 4}
        big = [x for x in run["leaves"] if np.prod(x["shape"]) >= 2**12]
        params = [x for x in big if x["path"].startswith(".params")]
        moments = [x for x in big if ".mu" in x["path"] or ".nu" in x["path"]]
        assert params and len(moments) == 2 * len(params)
        for x in big:  # every large leaf split 4 ways along fsdp (and replicated along data)
            assert x["spec"].count("fsdp") == 1 and x["devices"] == 8, x
            assert np.prod(x["shard_shape"]) * 4 == np.prod(x["shape"]), x
        embedding = next(x for x in params if x["path"].endswith("['embedding']"))
        assert embedding["spec"] == ["fsdp", None]
        assert all(x["spec"][0] is None for x in params if "['blocks']" in x["path"])  # the layer axis


def resume_from_step_2(config, name: str):
    """A copy of the 8-device run's workdir without its step-4 checkpoint."""
    c = config.copy_and_resolve_references()
    c.workdir = config.workdir.replace("_8", name)
    shutil.copytree(config.workdir, c.workdir)
    shutil.rmtree(os.path.join(c.workdir, "checkpoints", str(STEPS)))
    return c


def test_checkpoint_of_8_devices_resumes_on_1_and_on_4(eight_devices, capsys):
    configs, _ = eight_devices
    expected = metric_rows(configs["bk"].workdir)

    one = resume_from_step_2(configs["bk"], "_on1")
    one.mesh.data, one.mesh.fsdp = 1, 1
    train(Settings.from_config(one), "日本")
    assert "resumed from step 2" in capsys.readouterr().out
    assert_same_losses(metric_rows(one.workdir), expected, (3, 4))

    four = resume_from_step_2(configs["bk"], "_on4")
    four.mesh.data, four.mesh.fsdp = 2, 2
    result = on_devices(4, [four])
    assert result["devices"] == 4 and result["runs"][0]["mesh"] == {"data": 2, "fsdp": 2}
    assert_same_losses(metric_rows(four.workdir), expected, (3, 4))


def test_two_processes_train_like_one(eight_devices):
    """jax.distributed with 2 processes × 4 devices, the same 2 × 4 mesh as the 8-device run:
    each process loads its rows of every batch; only process 0 logs; the checkpoint is shared."""
    configs, _ = eight_devices
    two = configs["bk"].copy_and_resolve_references()
    two.workdir = configs["bk"].workdir.replace("_8", "_2x4")
    result = on_devices(4, [two], processes=2)
    assert result["devices"] == 8 and result["runs"][0]["mesh"] == {"data": 2, "fsdp": 4}
    assert "step 4/4" in result["stdout"][0] and "step 4/4" not in result["stdout"][1]
    assert_same_losses(metric_rows(two.workdir), metric_rows(configs["bk"].workdir), range(1, STEPS + 1))
    assert sorted(os.listdir(os.path.join(two.workdir, "checkpoints"))) == ["2", "4"]
