"""Prime-Bump: V_ε against a naive loop, the energies it places, and that it changes the model."""

import math

import jax
import numpy as np
from flax import nnx

from muse_jax.model.bk_mixer import ENERGY_MAX
from muse_jax.model.lm import LanguageModel
from muse_jax.model.prime_bump import prime_bump_energies, prime_bump_potential, primes_up_to
from muse_jax.settings import ModelSettings


def naive_potential(x: float, max_prime: int, max_power: int, eps: float) -> float:
    total, weight_sum = 0.0, 0.0
    for p in range(2, max_prime + 1):
        if any(p % q == 0 for q in range(2, p)):
            continue
        for k in range(1, max_power + 1):
            w = math.log(p) / p ** (k / 2)
            total += w * math.exp(-((x - k * math.log(p)) ** 2) / (2 * eps**2))
            weight_sum += w
    return total / weight_sum


def test_primes():
    assert primes_up_to(30).tolist() == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert primes_up_to(1).tolist() == []


def test_potential_equals_naive_loop():
    xs = np.linspace(-0.5, 8.0, 37)
    for max_prime, max_power, eps in [(31, 3, 0.1), (7, 2, 0.3)]:
        fast = prime_bump_potential(xs, max_prime, max_power, eps)
        slow = [naive_potential(x, max_prime, max_power, eps) for x in xs]
        np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-15)
    assert 0.0 <= prime_bump_potential(xs).min() and prime_bump_potential(xs).max() <= 1.0


def test_energies_span_the_plain_range_and_sit_on_the_bumps():
    energies = prime_bump_energies(64, ENERGY_MAX)
    assert energies.shape == (64,) and np.all(np.diff(energies) >= 0)
    np.testing.assert_allclose([energies[0], energies[-1]], [-ENERGY_MAX, ENERGY_MAX], rtol=1e-6)
    # Not a uniform grid: spacing varies by more than 5× (channels crowd at bumps).
    gaps = np.diff(energies)
    assert gaps.max() > 5 * gaps.min()


def test_prime_bump_changes_the_model_outputs(tiny_config):
    """Same seed, only E_c differs, and the logits change: nothing normalises the init away."""
    cfg = tiny_config.model
    tokens = jax.random.randint(jax.random.key(0), (1, 16), 0, 97)
    outputs, energies = [], []
    for prime_bump in (False, True):
        cfg.bk.prime_bump = prime_bump
        model = LanguageModel(ModelSettings.from_config(cfg), 97, rngs=nnx.Rngs(0))
        outputs.append(np.asarray(model(tokens)))
        energies.append(np.asarray(model.blocks.mixer.energy[...]))
    assert not np.allclose(energies[0], energies[1])
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-3
