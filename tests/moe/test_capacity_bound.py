"""The critical capacity bound: the incomplete-beta probability is what sampling the sphere gives; the tool's CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from locmoe_ms.moe.capacity_bound import assignment_probability, critical_capacity, log10_assignment_probability_large_d

TOOL = Path(__file__).resolve().parents[2] / "tools" / "capacity_bound.py"


@pytest.mark.parametrize("delta,hidden", [(0.1, 64), (0.3, 16), (0.05, 512)])
def test_assignment_probability_matches_sampling_the_sphere(delta, hidden):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200_000, hidden))
    cos = x[:, 0] / np.linalg.norm(x, axis=1)
    sampled = (np.abs(cos) >= delta).mean()
    assert assignment_probability(delta, hidden) == pytest.approx(sampled, abs=4e-3)


def test_paper_setting_is_about_two_tokens():
    exact, approx = critical_capacity(0.03, 5120, 16)
    assert 1.9 < exact < 2.0 and 1.9 < approx < 2.0
    assert abs(exact - approx) < 0.01


def _run(*args):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=60)


def test_tool_prints_both_forms():
    out = _run("--delta", "0.03", "--hidden", "5120", "--experts", "16")
    assert out.returncode == 0
    assert "ec_min = 1.9648" in out.stdout and "ec_min = 1.9664" in out.stdout
    data = json.loads(_run("--delta", "0.03", "--hidden", "5120", "--experts", "16", "--json").stdout)
    assert data["vacuous"] is False and data["ec_min_betainc"] == pytest.approx(1.9648, abs=1e-4)


def test_help_states_the_caveats():
    text = _run("--help").stdout
    assert "lower bound on an expected value" in text and "vacuous" in text


@pytest.mark.parametrize("args,expected", [
    (["--delta", "2", "--hidden", "16", "--experts", "8"], "--delta = 2.0"),
    (["--delta", "0.1", "--hidden", "0", "--experts", "8"], "--hidden = 0"),
    (["--delta", "0.1", "--hidden", "16", "--experts", "-1"], "--experts = -1"),
    (["--delta", "x", "--hidden", "16", "--experts", "8"], "invalid float value: 'x'"),
    (["--hidden", "16", "--experts", "8"], "--delta"),
])
def test_bad_arguments_exit_2_with_one_line(args, expected):
    out = _run(*args)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and expected in out.stderr, out.stderr


@pytest.mark.parametrize("delta", [0.2, 0.4])
def test_large_deltas_keep_their_tiny_probability(delta):
    """1 - I_{delta^2} cancels to exactly 0 once p_delta < 1e-16; the project's form keeps the value, and its log-space
    erfc form stays finite far below float64's range. Reference: 60-digit mpmath."""
    import mpmath
    mpmath.mp.dps = 60
    d, x = 5120, mpmath.mpf(delta) ** 2
    exact = mpmath.betainc((d - 1) / mpmath.mpf(2), mpmath.mpf(1) / 2, 0, 1 - x, regularized=True)
    assert assignment_probability(delta, d) == pytest.approx(float(exact), rel=1e-9)
    for hidden in (d, 50 * d):
        large_d = mpmath.log10(mpmath.erfc(mpmath.sqrt(x * hidden / (2 - x))))
        assert log10_assignment_probability_large_d(delta, hidden) == pytest.approx(float(large_d), rel=1e-9)


def test_tool_handles_bounds_beyond_float64():
    out = _run("--delta", "0.4", "--hidden", "5120", "--experts", "16")
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert "ec_min = 1.44e+194 tokens per expert" in out.stdout
    out = _run("--delta", "0.9", "--hidden", "5120", "--experts", "16", "--json")
    data = json.loads(out.stdout)  # strict JSON: no Infinity
    assert data["ec_min_betainc"] is None and data["log10_ec_min_erfc"] == pytest.approx(1514.35, abs=0.01)
    text = _run("--delta", "0.9", "--hidden", "5120", "--experts", "16").stdout
    assert "unbounded (> 1e308)" in text and "2.2394e1514" in text
