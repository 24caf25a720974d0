"""The benchmark scripts run end to end at a tiny size (no timing assertions)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, timeout: float = 120) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.setdefault("MPLBACKEND", "Agg")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} {args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_speed_tiny():
    out = _run("speed.py", "--tiny")
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"speedup M=100 normalised: [0-9.]+x", last), out
    assert "reference workers" in out and "compile" in out


def test_gpu_check_tiny_on_cpu():
    out = _run("gpu_check.py", "--tiny")
    assert "Fig 1 at paper scale" in out and "total:" in out, out
