"""
stats.py: what a handful of paired runs can tell: the mean of their differences with its 95%
confidence interval (Student's t), and a mean with its spread.
"""
import math
import statistics


def t_quantile_975(df):
    """The 97.5% quantile of Student's t with df degrees of freedom: the t of a two-sided
    95% interval. Found by bisection on the closed form of P(|T| <= t) for whole df
    (Abramowitz and Stegun 26.7.3 and 26.7.4)."""
    def two_sided(t):  # P(|T| <= t)
        theta = math.atan(t / math.sqrt(df))
        c2, s = math.cos(theta) ** 2, math.sin(theta)
        if df % 2:  # odd: 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
            term, total = math.cos(theta), 0.0
            for k in range(1, (df - 1) // 2 + 1):
                total += term
                term *= c2 * 2 * k / (2 * k + 1)
            return 2 / math.pi * (theta + s * total)
        term, total = 1.0, 0.0  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        for k in range(1, df // 2 + 1):
            total += term
            term *= c2 * (2 * k - 1) / (2 * k)
        return s * total

    low, high = 0.0, 1000.0
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if two_sided(mid) < 0.95 else (low, mid)
    return (low + high) / 2


def paired_interval(diffs):
    """Mean of paired differences with its 95% interval: mean ± t(n-1) · s / sqrt(n), s the
    sample standard deviation. None for fewer than two pairs."""
    n = len(diffs)
    if n < 2:
        return None
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return dict(mean=mean, low=mean - half, high=mean + half, n=n)


def mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None
