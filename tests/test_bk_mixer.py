"""The BK mixing sublayer: the LAP bound |g| ≤ 1/η on extreme inputs, and LAP off."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from muse_jax.model.bk_mixer import BKMixer
from muse_jax.model.linear import LinearSpec
from muse_jax.settings import BKSettings


def make_mixer(tiny_config, **bk) -> BKMixer:
    cfg = tiny_config.model.bk
    for key, value in bk.items():
        cfg[key] = value
    return BKMixer(tiny_config.model.d_model, BKSettings.from_config(cfg), LinearSpec(), rngs=nnx.Rngs(0))


def test_lap_bounds_the_resolvent_on_extreme_inputs(tiny_config):
    eta = 0.05
    mixer = make_mixer(tiny_config, lap_eta=eta, semiseparable=True)
    mixer.width[...] = jnp.full_like(mixer.width[...], -60.0)  # softplus ≈ 0: Im z at its floor η
    h = 1e4 * jax.random.normal(jax.random.key(0), (2, 40, tiny_config.model.d_model))
    g, mixed, z = mixer.resolvent(h)
    np.testing.assert_allclose(z.imag, eta, rtol=1e-6)
    assert float(jnp.max(jnp.abs(g))) <= (1 / eta) * (1 + 1e-5)
    assert bool(jnp.all(jnp.isfinite(mixed)))
    out, _ = mixer(h)
    assert bool(jnp.all(jnp.isfinite(out)))


def test_lap_off_makes_im_z_a_free_parameter(tiny_config):
    mixer = make_mixer(tiny_config, lap_eta=0.0)
    free = jnp.linspace(-0.3, 0.4, tiny_config.model.bk.channels)
    mixer.width[...] = free
    np.testing.assert_allclose(mixer.spectral_parameter().imag, free)  # may be ≤ 0: no floor, no bound
    on = make_mixer(tiny_config, lap_eta=0.05)
    on.width[...] = free
    assert float(on.spectral_parameter().imag.min()) >= 0.05
