"""Bootstrap intervals, the paired comparison and the length-controlled win-rate (dno_data/stats.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dno_data.stats import bootstrap_ci, lc_winrate, lc_winrate_ci, paired_bootstrap


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    rng = np.random.default_rng(1)
    x = rng.binomial(1, 0.3, size=400).astype(float)
    a, b = bootstrap_ci(x, seed=7), bootstrap_ci(x, seed=7)
    assert a == b
    assert a.value == pytest.approx(x.mean())
    assert a.low < a.value < a.high
    # a binomial proportion's 95 % interval is about ±1.96·sqrt(p(1-p)/n)
    half = 1.96 * np.sqrt(x.mean() * (1 - x.mean()) / x.size)
    assert (a.high - a.low) / 2 == pytest.approx(half, rel=0.15)
    assert bootstrap_ci(x, seed=8) != a


def test_bootstrap_leaves_out_missing_values():
    iv = bootstrap_ci([1.0, None, 0.0, float("nan"), 1.0])
    assert iv.n == 3 and iv.value == pytest.approx(2 / 3)
    assert bootstrap_ci([]) is None


def test_paired_bootstrap_tells_noise_from_a_difference():
    rng = np.random.default_rng(0)
    base = {i: float(rng.random() < 0.5) for i in range(300)}
    same = {i: v if rng.random() < 0.9 else 1 - v for i, v in base.items()}  # 10 % of answers flip
    better = {i: 1.0 if rng.random() < 0.3 else v for i, v in base.items()}  # +~15 points
    assert paired_bootstrap(same, base).within_noise or paired_bootstrap(base, same).within_noise
    d = paired_bootstrap(better, base)
    assert not d.within_noise and d.diff.low > 0 and d.p_not_better < 0.01
    assert paired_bootstrap({1: 1.0}, {2: 0.0}) is None  # no shared prompt


def test_lc_winrate_removes_a_win_that_length_alone_explains():
    """The judge prefers the longer answer and nothing else; the policy is usually longer."""
    rng = np.random.default_rng(0)
    n = 3000
    teacher_len = rng.normal(500, 100, n)
    policy_len = teacher_len + rng.normal(150, 200, n)  # longer on average
    delta = policy_len - teacher_len
    p_win = 1 / (1 + np.exp(-3 * np.tanh(delta / delta.std())))  # no intercept: equal quality
    wins = (rng.random(n) < p_win).astype(float)
    r = lc_winrate(wins, policy_len, teacher_len)
    assert r.raw_winrate > 0.70  # raw win-rate far from 50 %
    assert r.lc_winrate == pytest.approx(0.5, abs=0.03)
    assert r.length_slope == pytest.approx(3.0, rel=0.15)
    point, iv = lc_winrate_ci(wins, policy_len, teacher_len, resamples=100)
    assert iv.low < 0.5 < iv.high and iv.high < r.raw_winrate


def test_lc_winrate_keeps_a_real_quality_gain():
    """Same lengths on average, but the policy wins 75 % on quality: LC keeps it."""
    rng = np.random.default_rng(1)
    n = 2000
    teacher_len = rng.normal(500, 100, n)
    policy_len = teacher_len + rng.normal(0, 200, n)
    delta = policy_len - teacher_len
    p_win = 1 / (1 + np.exp(-(np.log(3) + 1.0 * np.tanh(delta / delta.std()))))
    wins = (rng.random(n) < p_win).astype(float)
    r = lc_winrate(wins, policy_len, teacher_len)
    assert r.lc_winrate == pytest.approx(0.75, abs=0.03)


def test_lc_winrate_takes_ties_and_survives_perfect_separation():
    # every longer answer wins, every shorter one loses, equal lengths tie: finite, about 50 %
    lens = np.arange(-20, 21, dtype=float)
    wins = np.where(lens > 0, 1.0, np.where(lens < 0, 0.0, 0.5))
    r = lc_winrate(wins, 100 + lens, np.full_like(lens, 100))
    assert np.isfinite(r.intercept) and r.lc_winrate == pytest.approx(0.5, abs=1e-6)
    assert lc_winrate([], [], []) is None


# ---------------------------------------------------------------- the intervals against a known case and scipy

def test_bootstrap_intervals_match_the_textbook_case_and_scipy():
    """A win-rate of 0.3 over 400 prompts: the percentile bootstrap of the mean is the normal interval
    0.3 ± 1.96·sqrt(0.3·0.7/400) = [0.2551, 0.3449] up to Monte Carlo error (20 000 resamples: about
    ±0.002 on each end), and scipy.stats.bootstrap's percentile method gives the same interval; the paired
    difference likewise (its one-sided p-value too) and a statistic other than the mean."""
    import math

    import numpy as np

    x = [1.0] * 120 + [0.0] * 280
    half = 1.96 * math.sqrt(0.3 * 0.7 / 400)
    iv = bootstrap_ci(x, resamples=20_000, seed=1)
    assert iv.value == pytest.approx(0.3)
    assert iv.low == pytest.approx(0.3 - half, abs=0.006) and iv.high == pytest.approx(0.3 + half, abs=0.006)
    scipy_stats = pytest.importorskip("scipy.stats")
    ref = scipy_stats.bootstrap((np.asarray(x),), np.mean, n_resamples=20_000, method="percentile",
                                confidence_level=0.95, random_state=np.random.default_rng(2)).confidence_interval
    assert iv.low == pytest.approx(ref.low, abs=0.006) and iv.high == pytest.approx(ref.high, abs=0.006)

    med = bootstrap_ci(list(range(101)), stat=np.median, resamples=4000, seed=3)
    ref = scipy_stats.bootstrap((np.arange(101.0),), np.median, n_resamples=4000, method="percentile",
                                random_state=np.random.default_rng(4)).confidence_interval
    assert med.value == 50 and med.low == pytest.approx(ref.low, abs=3) and med.high == pytest.approx(ref.high, abs=3)

    rng = np.random.default_rng(5)
    a = {i: float(v) for i, v in enumerate(rng.random(300) < 0.55)}
    b = {i: float(v) for i, v in enumerate(rng.random(300) < 0.45)}
    d = paired_bootstrap(a, b, resamples=20_000, seed=6)
    diffs = np.asarray([a[i] - b[i] for i in range(300)])
    res = scipy_stats.bootstrap((diffs,), np.mean, n_resamples=20_000, method="percentile",
                                random_state=np.random.default_rng(7))
    assert d.diff.low == pytest.approx(res.confidence_interval.low, abs=0.008)
    assert d.diff.high == pytest.approx(res.confidence_interval.high, abs=0.008)
    assert d.p_not_better == pytest.approx(float(np.mean(res.bootstrap_distribution <= 0)), abs=0.01)
