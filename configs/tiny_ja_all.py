"""configs/tiny_ja.py with every mathematical component of docs/architecture.md switched on at once:
Prime-Bump energies, LAP, semiseparable mixing, the scattering router over 4 experts, the
hyperbolic tied head on a tensor-train table, low-rank and ternary block linears."""

import ml_collections

from configs import tiny_ja


def get_config() -> ml_collections.ConfigDict:
    c = tiny_ja.get_config()
    c.workdir = "workdirs/tiny_ja_all"
    c.model.embedding = "hyperbolic_htt"
    c.model.low_rank = 32
    c.model.ternary = True
    c.model.router = "scattering"
    c.model.bk.prime_bump = True
    c.model.bk.semiseparable = True
    return c
