"""stats.py: Student's t and the paired interval against textbook values."""
import pytest

from microgpt_lab import stats

# Student's t, 97.5% quantile, df 1..30, as printed in statistics textbooks.
T_TABLE = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
           2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
           2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def test_t_quantile_matches_the_textbook_table():
    for df, t in enumerate(T_TABLE, 1):
        assert round(stats.t_quantile_975(df), 3) == t, df
    assert round(stats.t_quantile_975(60), 3) == 2.000
    assert round(stats.t_quantile_975(120), 3) == 1.980
    assert round(stats.t_quantile_975(10 ** 4), 4) == 1.9602  # near the normal's 1.9600


def test_paired_interval_of_students_sleep_data():
    # Cushny and Peebles' sleep data (Student, 1908): extra hours of sleep, drug 2 minus
    # drug 1, for 10 patients. The paired t-test gives mean 1.58, 95% CI [0.700, 2.460].
    diffs = [1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4]
    ci = stats.paired_interval(diffs)
    assert ci['n'] == 10 and ci['mean'] == pytest.approx(1.58)
    assert ci['low'] == pytest.approx(0.7001142, abs=1e-6)
    assert ci['high'] == pytest.approx(2.4598858, abs=1e-6)
    assert stats.paired_interval([0.3]) is None
