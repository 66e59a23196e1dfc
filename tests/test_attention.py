"""`model.attention_impl`: cuDNN flash attention is chosen only on an NVIDIA GPU with bfloat16 /
float16 inputs (the backend query faked), `cudnn` elsewhere is a clear error naming the key, and
on CPU the `jax.nn.dot_product_attention` path equals plain materialised softmax attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from muse_jax.model import attention
from muse_jax.model.attention import CausalSelfAttention, attention_implementation, rotary_embedding
from muse_jax.settings import UnsupportedBackend

BF16, F16, F32 = jnp.bfloat16, jnp.float16, jnp.float32


@pytest.mark.parametrize("platform, dtype, head_dim, expected", [
    ("cuda", BF16, 64, "cudnn"),
    ("cuda", F16, 128, "cudnn"),
    ("cuda", F32, 64, "xla"),  # cuDNN flash takes half precision only
    ("cuda", BF16, 12, "xla"),  # not a multiple of 8
    ("cuda", BF16, 160, "xla"),  # above what every CUDA GPU's flash kernel takes
    ("cpu", BF16, 64, "xla"),
    ("tpu", BF16, 64, "xla"),
    ("gpu", BF16, 64, "xla"),  # a ROCm GPU: no cuDNN
])
def test_auto_picks_cudnn_only_on_a_cuda_gpu_in_half_precision(platform, dtype, head_dim, expected):
    assert attention_implementation("auto", platform, dtype, head_dim) == expected
    assert attention_implementation("xla", platform, dtype, head_dim) == "xla"


def test_cudnn_without_a_cuda_gpu_or_in_float32_is_an_error_naming_the_key():
    assert attention_implementation("cudnn", "cuda", BF16, 64) == "cudnn"
    with pytest.raises(UnsupportedBackend, match="model.attention_impl=cudnn needs an NVIDIA GPU"):
        attention_implementation("cudnn", "cpu", BF16, 64)
    with pytest.raises(UnsupportedBackend, match="model.attention_impl=cudnn needs bfloat16 or float16"):
        attention_implementation("cudnn", "cuda", F32, 64)
    with pytest.raises(UnsupportedBackend, match="model.attention_impl=cudnn"):  # at build, on this CPU
        CausalSelfAttention(32, 2, rngs=nnx.Rngs(0), implementation="cudnn")


def implementations_called(monkeypatch, module, x) -> list:
    """The `implementation=` of every `jax.nn.dot_product_attention` call while tracing module(x)."""
    calls, real = [], jax.nn.dot_product_attention

    def spy(*args, implementation=None, **kwargs):
        calls.append(implementation)
        return real(*args, implementation="xla", **kwargs)  # the CPU cannot run cuDNN: trace XLA's

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    jax.eval_shape(module, x)
    return calls


def test_the_forward_asks_for_cudnn_exactly_where_the_backend_query_says_cuda(monkeypatch):
    """The module consults `accelerator()` (faked here): bfloat16 inputs on "cuda" → cudnn; the
    same module built on the CPU, or float32 inputs, → xla."""
    x = jnp.ones((2, 16, 32))
    monkeypatch.setattr(attention, "accelerator", lambda: "cuda")
    on_gpu = CausalSelfAttention(32, 2, rngs=nnx.Rngs(0))
    assert implementations_called(monkeypatch, on_gpu, x.astype(BF16)) == ["cudnn"]
    assert implementations_called(monkeypatch, on_gpu, x) == ["xla"]
    monkeypatch.setattr(attention, "accelerator", lambda: "cpu")
    on_cpu = CausalSelfAttention(32, 2, rngs=nnx.Rngs(0))
    assert implementations_called(monkeypatch, on_cpu, x.astype(BF16)) == ["xla"]


def materialised_attention(module: CausalSelfAttention, x: jax.Array) -> jax.Array:
    """The plain reference: y = softmax(Q Kᵀ/√d + causal mask) V per head, then the output projection."""
    b, t, d = x.shape
    q, k, v = jnp.split(module.qkv(x).reshape(b, t, 3 * module.n_heads, d // module.n_heads), 3, axis=2)
    q, k = rotary_embedding(q, jnp.arange(t)), rotary_embedding(k, jnp.arange(t))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.float32(q.shape[-1]))
    scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, -jnp.inf)
    y = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
    return module.out(y.reshape(b, t, d))


@pytest.mark.parametrize("impl", ["auto", "xla"])
def test_dot_product_attention_equals_materialised_attention_on_cpu(impl):
    module = CausalSelfAttention(32, 4, rngs=nnx.Rngs(1), implementation=impl)
    x = jax.random.normal(jax.random.key(2), (2, 24, 32))
    np.testing.assert_allclose(module(x), materialised_attention(module, x), rtol=1e-5, atol=1e-5)


def test_the_command_line_reports_cudnn_on_cpu_as_one_line(tmp_path, tiny_config):
    """`--config.model.attention_impl=cudnn` on this CPU: one line naming the key, exit 2, nothing compiled."""
    from test_cli import config_module, run_cli

    tiny_config.model.kind = "transformer"
    r = run_cli("--config", config_module(tmp_path, tiny_config), "--mode=dry_run",
                "--config.model.attention_impl=cudnn")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith("error: model.attention_impl=cudnn needs an NVIDIA GPU")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "dry_run.json").exists()
