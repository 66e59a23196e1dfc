"""Width-aware learning rates (μP for Adam): which parameters are hidden matrices, and that the
optimizer moves each group at its own rate."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from configs.tiny_ja import get_config
from muse_jax.model.lm import LanguageModel
from muse_jax.model.param_roles import roles
from muse_jax.optim.width_scaling import width_lr_multipliers
from muse_jax.settings import ModelSettings, OptimSettings
from muse_jax.train.optimizer import build_optimizer


def model_at(d_model: int, **model_keys) -> LanguageModel:
    c = get_config().model
    c.d_model, c.n_layers, c.n_heads = d_model, 2, 4
    for k, v in model_keys.items():
        c[k] = v
    return nnx.eval_shape(lambda: LanguageModel(ModelSettings.from_config(c), 97, rngs=nnx.Rngs(0)))


def flat(tree) -> dict[str, float]:
    return {jax.tree_util.keystr(p, simple=True, separator="/"): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_groups_hidden_matrices_embedding_and_the_rest():
    m = flat(width_lr_multipliers(roles(model_at(256, low_rank=8)).lr_group, 256, 128, embed_lr_mult=32.0))
    assert m["embed/table/embedding"] == 32.0
    # fan-in d_model (hidden): ×128/256; fan-in fixed (rank 8, or the BK read-out of 2C features): ×1
    assert m["blocks/ffn/up/factor_in/kernel"] == m["blocks/mixer/potential/factor_in/kernel"] == 0.5
    assert m["blocks/ffn/up/factor_out/kernel"] == m["blocks/mixer/out/factor_in/kernel"] == 1.0
    assert m["blocks/mixer/energy"] == m["blocks/mix_norm/scale"] == m["blocks/mixer/potential/factor_out/bias"] == 1.0
    dense = flat(width_lr_multipliers(roles(model_at(512, kind="transformer")).lr_group, 512, 128))
    assert dense["blocks/mixer/qkv/kernel"] == dense["blocks/ffn/down/kernel"] == 0.25
    assert dense["embed/table/embedding"] == 1.0


def test_each_group_moves_at_its_rate():
    """One AdamW step of the run's optimizer equals AdamW at lr·D₀/D on a hidden kernel, lr·m_E on
    the table and lr elsewhere (same gradient; no clipping at this size)."""
    cfg = get_config().optim
    cfg.warmup_steps, cfg.lr_base_width, cfg.embed_lr_mult = 0, 128, 8.0
    model = model_at(256)
    params = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: model), nnx.Param))
    params = jax.tree.map(lambda s: jnp.full(s.shape, 0.5, s.dtype), params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-4), params)
    tx = build_optimizer(OptimSettings.from_config(cfg), 10, seed=0, model=model)
    updates, _ = tx.update(grads, tx.init(params), params, loss=jnp.float32(1.0))
    lr, adam = cfg.adamw.lr, cfg.adamw

    def adamw_update(scale):
        t = optax.adamw(lr * scale, b1=adam.b1, b2=adam.b2, weight_decay=adam.weight_decay, mask=roles(model).decay)
        return flat(t.update(grads, t.init(params), params)[0])

    got, at = flat(updates), {s: adamw_update(s) for s in (0.5, 8.0, 1.0)}
    for name, scale in [("blocks/ffn/up/kernel", 0.5), ("embed/table/embedding", 8.0), ("blocks/mixer/energy", 1.0),
                        ("blocks/mixer/out/kernel", 1.0)]:
        np.testing.assert_allclose(got[name], at[scale][name], rtol=1e-6, err_msg=name)
