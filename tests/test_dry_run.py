"""--mode=dry_run: analytic bytes match counts derived by hand from the architecture; offload
moves state off the device's budget; a config that cannot fit fails clearly."""

import subprocess
import sys

from muse_jax.settings import Settings
from muse_jax.train.dry_run import GIB, dry_run

FLOAT32 = 4  # bytes
ADAM_SCALARS_MAX = 16  # step counts, injected hyperparameters, the clipped-norm record, the skip counter


def tiny_bk_parameters(c) -> int:
    """The tiny BK model's parameter count by hand (bk_mixer.py, ffn.py, lm.py; dense, no options):
    table V·D + final norm D + per layer: two norms 2D, potential and coupling 2(D·C + C),
    energies and widths 2C, read-out 2C·D, gate D², FFN 3·D·F."""
    v, d, ch, layers = c.data.vocab_size, c.model.d_model, c.model.bk.channels, c.model.n_layers
    f = c.model.ffn_mult * d
    return v * d + d + layers * (2 * d + 2 * (d * ch + ch) + 2 * ch + 2 * ch * d + d * d + 3 * d * f)


def assert_state_bytes(report, c, ema: bool) -> None:
    """params = grads = EMA (if any) = 4 bytes × the hand count; AdamW state = two moments of
    every parameter plus a few 4-byte scalars; activations = the documented estimate."""
    b, params = report["analytic_bytes"], tiny_bk_parameters(c)
    assert params == 71_904  # 1536·32 + 32 + 2·(64 + 528 + 16 + 512 + 1024 + 9216): the tiny config's numbers
    assert report["parameters"]["stored"] == report["parameters"]["dense_equivalent"] == params
    assert b["params"] == b["grads"] == FLOAT32 * params
    assert b["ema"] == (FLOAT32 * params if ema else 0)
    extra = b["optimizer_state"] - 2 * FLOAT32 * params  # mu and nu, float32 like the params
    assert 0 < extra <= FLOAT32 * ADAM_SCALARS_MAX and extra % FLOAT32 == 0, extra
    # 4 bytes × batch·seq tokens × (layers·(8D + 3F + 12C) + 2V) (dry_run.activation_bytes_estimate)
    tokens, d, ch = c.train.batch_size * c.train.seq_len, c.model.d_model, c.model.bk.channels
    f = c.model.ffn_mult * d
    per_token = c.model.n_layers * (8 * d + 3 * f + 12 * ch) + 2 * c.data.vocab_size
    assert b["activations_without_remat_estimate"] == FLOAT32 * tokens * per_token


def test_analytic_bytes_equal_the_hand_counts(tiny_config):
    tiny_config.hardware.device_memory_gb = 0.01  # batch 8 fits, 16 does not: a short search
    report = dry_run(Settings.from_config(tiny_config))
    assert_state_bytes(report, tiny_config, ema=False)
    assert report["fits"] and report["largest_batch_size_that_fits"] >= tiny_config.train.batch_size
    assert report["xla_memory_analysis"]["peak_bytes"] > report["analytic_bytes"]["params"]


def test_offloaded_state_is_reported_as_host_memory(tiny_config):
    tiny_config.hardware.device_memory_gb = 0.01
    tiny_config.train.ema_decay = 0.9
    plain = dry_run(Settings.from_config(tiny_config))
    assert_state_bytes(plain, tiny_config, ema=True)
    tiny_config.train.offload_params = tiny_config.train.offload_optimizer = True
    offloaded = dry_run(Settings.from_config(tiny_config))
    b = offloaded["analytic_bytes"]
    assert b == plain["analytic_bytes"] | {"host_resident_state": b["params"] + b["optimizer_state"] + b["ema"]}
    assert offloaded["xla_memory_analysis"]["host_state_bytes"] == b["params"] + b["optimizer_state"] + b["ema"]
    assert plain["xla_memory_analysis"]["host_state_bytes"] == 0
    assert offloaded["peak_device_gb"] < plain["peak_device_gb"]
    assert offloaded["peak_device_gb"] * GIB >= 2 * b["params"] + b["optimizer_state"] + b["ema"]  # the update
    assert "pinned host memory" in offloaded["verdict"]


def test_a_config_that_cannot_fit_exits_non_zero(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "muse_jax.main", "--config", "configs/tiny_ja.py", "--mode=dry_run",
         f"--config.workdir={tmp_path}", "--config.model.d_model=32", "--config.model.n_layers=1",
         "--config.hardware.device_memory_gb=0.0001"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode != 0
    assert "does not fit: needs" in r.stdout and (tmp_path / "dry_run.json").exists()
