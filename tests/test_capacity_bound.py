"""The critical capacity bound: the incomplete-beta probability is what sampling the sphere gives; the tool's CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from locmoe_ms.moe.capacity import assignment_probability, critical_capacity

TOOL = Path(__file__).resolve().parents[1] / "tools" / "capacity_bound.py"


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
