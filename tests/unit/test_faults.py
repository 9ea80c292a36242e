"""Fault points: disarmed by default, armed by SHELFCAST_FAULT_POINT, and a crash is a real
SIGKILL at the n-th hit of the named point only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from runtime.errors import ConfigError
from runtime.faults import FAULT_ENV, parse_fault

SCRIPT = """
from runtime.faults import fault_point
for i in range(1, 6):
    fault_point("worker.mid_batch")
    fault_point("worker.before_commit", when=i % 2 == 0)
    print(i, flush=True)
"""


def run(spec: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if spec is not None:
        env[FAULT_ENV] = spec
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_disarmed_points_do_nothing():
    done = run(None)
    assert done.returncode == 0 and done.stdout.split() == ["1", "2", "3", "4", "5"]


def test_armed_point_sigkills_at_its_nth_true_hit():
    done = run("worker.before_commit@2")  # true on i = 2, 4: dies at i = 4 before printing
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["1", "2", "3"]
    assert run("worker.mid_batch").stdout.split() == []


@pytest.mark.parametrize("spec", ["worker.nowhere", "worker.mid_batch@0", "worker.mid_batch@x"])
def test_bad_specs_are_one_line_config_errors(spec):
    with pytest.raises(ConfigError, match=FAULT_ENV):
        parse_fault(spec)
    assert parse_fault("optimizer.after_plan_write@3") == ("optimizer.after_plan_write", 3)
