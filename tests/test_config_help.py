"""`--help`: exit 0, the flags, and every config key with its default and its comment from the
config file, grouped by section."""

from test_cli import run_cli

from configs.tiny_ja import get_config
from muse_jax.train.workdir_config import flat


def key_line(lines: list[str], key: str) -> str:
    found = [line for line in lines if line.strip().startswith(f"{key} = ")]
    assert len(found) == 1, key
    return found[0]


def test_help_lists_every_key_with_its_default_and_comment():
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("  --mode: ") for line in lines) and any(line.startswith("  --prompt: ") for line in lines)
    for key, value in flat(get_config().to_dict()).items():
        assert f"{key} = {value!r}" in key_line(lines, key)
    assert key_line(lines, "train.steps").endswith("# optimizer steps")
    assert key_line(lines, "optim.grad_skip_threshold").endswith(  # a comment continued on the next line
        "0 = off. Non-finite gradients or loss always skip the step.")
    assert "optim.symplectic    # leapfrog on H = |p|^2/2 + L(x), time step h = sqrt(lr)" in lines
    assert lines.index("model.bk") < lines.index("data    # README \"Data\": manifest format, prepare, mixing")


def test_help_of_a_derived_config_shows_its_values_with_the_base_comments():
    r = run_cli("--config", "configs/tiny_ja_all.py", "--help")
    assert r.returncode == 0, r.stderr
    line = key_line(r.stdout.splitlines(), "model.low_rank")
    assert line.startswith("  model.low_rank = 32 ") and line.endswith("; 0 = dense")
