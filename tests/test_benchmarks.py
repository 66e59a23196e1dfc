"""The benchmarks survive a failing impl or model: the failure is recorded in that row, the run
goes on, and the JSON is rewritten after every length (tiny sizes, CPU)."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import bench_bk_core, bench_throughput
from experiments.failure import failure_record

OOM = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 44.00GiB.\nBuffer assignment: ..."


def run_main(module, monkeypatch, argv: list[str]) -> list[dict]:
    """Run `module.main()` with `argv`; returns every payload it wrote, in order."""
    written = []
    real_write = module.write_json

    def write_json(path, payload):
        written.append(json.loads(json.dumps(payload)))
        real_write(path, payload)

    monkeypatch.setattr(module, "write_json", write_json)
    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    module.main()
    return written


def out_of_memory_for(name: str, real):
    """`real` (called with an impl or model name first), except that `name` runs out of memory."""
    def wrapped(first, *rest):
        if first == name:
            raise jax.errors.JaxRuntimeError(OOM)
        return real(first, *rest)

    return wrapped


def test_failure_record():
    assert failure_record(jax.errors.JaxRuntimeError(OOM)) == {
        "error": "JaxRuntimeError", "message": "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 44.00GiB."}
    assert failure_record(ValueError("\n  first\nsecond")) == {"error": "ValueError", "message": "first"}


def test_bench_bk_core_records_a_failing_impl_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_bk_core, "vjp_fn", out_of_memory_for("associative", bench_bk_core.vjp_fn))
    out = tmp_path / "bk_core.json"
    written = run_main(bench_bk_core, monkeypatch, ["--batch", "1", "--channels", "4", "--lengths", "32,64",
                                                    "--impls", "associative,sequential", "--reps", "1",
                                                    "--precision-n", "0", "--out", str(out)])
    assert [len(w["timing"]) for w in written] == [1, 2, 2]  # after each length, then the final file
    first, second = json.loads(out.read_text())["timing"]
    assert first["impls"]["associative"] == {"error": "JaxRuntimeError", "message": OOM.splitlines()[0]}
    assert "associative" not in second["impls"] and second["not_run"] == {"associative": "failed at N=32"}
    for run in (first, second):
        seq = run["impls"]["sequential"]
        assert seq["ratio_to_copy"] > 0
        assert seq["residual_bytes_per_position"] == pytest.approx(12, abs=0.5)  # kappa + complex g
    assert written[-1]["summary"]["associative"]["failed"] == {"32": "JaxRuntimeError: " + OOM.splitlines()[0]}


def test_bench_throughput_records_a_failing_model_and_runs_bf16(tmp_path, monkeypatch):
    real_build_step = bench_throughput.build_step
    monkeypatch.setattr(bench_throughput, "build_step", out_of_memory_for("transformer", real_build_step))
    shape = ["--d-model", "16", "--layers", "1", "--channels", "4", "--vocab", "32", "--heads", "2"]
    out = tmp_path / "throughput.json"
    # N = 8 twice: the second compile is a hit of the session's compilation cache (conftest.py)
    written = run_main(bench_throughput, monkeypatch, [*shape, "--lengths", "8,8", "--tokens", "32", "--reps", "1",
                                                       "--compute-dtype", "bfloat16", "--out", str(out)])
    assert [len(w["runs"]) for w in written] == [1, 2]
    result = json.loads(out.read_text())
    assert result["config"]["compute_dtype"] == result["config"]["compute_dtype_resolved"] == "bfloat16"
    for run in result["runs"]:
        assert run["models"]["transformer"] == {"error": "JaxRuntimeError", "message": OOM.splitlines()[0]}
        assert run["models"]["bk"]["tokens_per_s"] > 0 and "bk_over_transformer_tokens_per_s" not in run

    # the compute dtype reaches the model: bf16 matmuls in the step, float32 without it
    args = bench_throughput.argparse.Namespace(d_model=16, layers=1, heads=2, channels=4, vocab=32,
                                               scan_impl="auto", compute_dtype="bfloat16")
    tokens = jnp.asarray(np.zeros((2, 9), np.int32))
    for dtype, expect_bf16 in (("bfloat16", True), ("float32", False)):
        args.compute_dtype = dtype
        step, params, opt_state, _ = real_build_step("bk", args)
        assert ("bf16" in step.lower(params, opt_state, tokens).as_text()) == expect_bf16
