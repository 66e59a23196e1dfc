r"""Prime-Bump initialisation of the per-channel energies Re z_c of a BK layer.

The prime-bump potential (normalised so that 0 <= V_eps <= 1):

    V_eps(x) = sum_{p prime <= P} sum_{k=1..K} w_{p,k} exp(-(x - k log p)^2 / (2 eps^2)) / sum w,
    w_{p,k}  = log p / p^{k/2}.

It has a bump at every log p^k (the von Mangoldt weights of the explicit formula).

What it initialises: the C spectral energies E_c = Re z_c of each BK layer (the points at which
the layer probes the resolvent of its Hamiltonian). The plain init spaces them uniformly,
E_c = linspace(-E_max, E_max). With Prime-Bump, E_c are the C mid-quantiles of the density
V_eps / ∫V_eps, mapped affinely so the first and last channel land on -E_max and +E_max:
the same span, but the channels cluster where V_eps has mass (at the bumps) and thin out
between them. Nothing downstream normalises E_c away — it enters g = 1/(a - z - kappa g)
directly — so the init changes the model's outputs (tested).
"""

import numpy as np

DEFAULT_MAX_PRIME = 31
DEFAULT_MAX_POWER = 3
DEFAULT_EPS = 0.1
_GRID_POINTS = 8192


def primes_up_to(n: int) -> np.ndarray:
    """All primes ≤ n (sieve of Eratosthenes)."""
    if n < 2:
        return np.zeros((0,), np.int64)
    sieve = np.ones(n + 1, bool)
    sieve[:2] = False
    for p in range(2, int(n**0.5) + 1):
        if sieve[p]:
            sieve[p * p :: p] = False
    return np.nonzero(sieve)[0]


def bump_centres_and_weights(max_prime: int, max_power: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres k·log p and weights log p / p^{k/2}, for p ≤ max_prime, k = 1..max_power."""
    logp = np.log(primes_up_to(max_prime).astype(np.float64))
    k = np.arange(1, max_power + 1, dtype=np.float64)[:, None]
    return (k * logp).ravel(), (logp * np.exp(-0.5 * k * logp)).ravel()


def prime_bump_potential(x, max_prime: int = DEFAULT_MAX_PRIME, max_power: int = DEFAULT_MAX_POWER,
                         eps: float = DEFAULT_EPS) -> np.ndarray:
    """V_eps(x), vectorised over x (float64). See the module docstring."""
    centres, weights = bump_centres_and_weights(max_prime, max_power)
    x = np.asarray(x, np.float64)[..., None]
    bumps = np.exp(-((x - centres) ** 2) / (2.0 * eps**2))
    return (bumps * weights).sum(-1) / weights.sum()


def prime_bump_energies(channels: int, energy_max: float, max_prime: int = DEFAULT_MAX_PRIME,
                        max_power: int = DEFAULT_MAX_POWER, eps: float = DEFAULT_EPS) -> np.ndarray:
    """E_c, c = 0..C-1: the (c + 1/2)/C quantiles of V_eps / ∫V_eps, mapped onto [-E_max, E_max]."""
    centres, _ = bump_centres_and_weights(max_prime, max_power)
    grid = np.linspace(centres.min() - 5 * eps, centres.max() + 5 * eps, _GRID_POINTS)
    cdf = np.cumsum(prime_bump_potential(grid, max_prime, max_power, eps))
    cdf /= cdf[-1]
    quantiles = np.interp((np.arange(channels) + 0.5) / channels, cdf, grid)
    if channels == 1:
        return np.zeros((1,), np.float32)
    span = quantiles[-1] - quantiles[0]
    return (energy_max * (2.0 * (quantiles - quantiles[0]) / span - 1.0)).astype(np.float32)
