"""Small-sample statistics for the experiments, without SciPy: mean, sample standard deviation,
Student-t quantiles and the paired 95 % confidence interval of a difference."""

import math


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def sample_sd(xs: list[float]) -> float:
    """s = sqrt(Σ (x − x̄)² / (n − 1)); 0 for a single value."""
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def t_pdf(x: float, df: int) -> float:
    """f(x) = Γ((ν+1)/2) / (√(νπ) Γ(ν/2)) · (1 + x²/ν)^(−(ν+1)/2)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def t_cdf(x: float, df: int, intervals: int = 2000) -> float:
    """F(x) = 1/2 + ∫₀ˣ f(u) du (composite Simpson; x ≥ 0 is all the quantile needs)."""
    if x == 0:
        return 0.5
    h = x / intervals
    total = t_pdf(0.0, df) + t_pdf(x, df)
    total += sum((4 if i % 2 else 2) * t_pdf(i * h, df) for i in range(1, intervals))
    return 0.5 + total * h / 3


def t_quantile(p: float, df: int) -> float:
    """x with F(x) = p for p in (0.5, 1), by bisection on [0, 1000]."""
    if not 0.5 < p < 1:
        raise ValueError(f"p must be in (0.5, 1), got {p}")
    lo, hi = 0.0, 1000.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def paired_difference(xs: list[float], ys: list[float], level: float = 0.95) -> dict:
    """d_i = x_i − y_i over paired runs (same seed): mean d̄ and the t interval
    d̄ ± t_{(1+level)/2, n−1} · s_d / √n."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"need ≥ 2 paired values, got {len(xs)} and {len(ys)}")
    diffs = [x - y for x, y in zip(xs, ys)]
    d, s = mean(diffs), sample_sd(diffs)
    half = t_quantile((1 + level) / 2, len(diffs) - 1) * s / math.sqrt(len(diffs))
    return {"mean": d, "sd": s, "n": len(diffs), "ci_low": d - half, "ci_high": d + half, "level": level}
