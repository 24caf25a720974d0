"""pyproject.toml and environment.yml list the same dependencies; the CLI is wired."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _normalise(req: str) -> tuple[str, str]:
    req = req.replace(" ", "")
    m = re.match(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?(.*)", req)
    name = m.group(1).lower().replace("_", "-")
    return name, m.group(3)


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("book", "dev"):
        wanted += project["optional-dependencies"][extra]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml needs exactly one pip: list"
    listed = [r for r in pip_lists[0] if not r.startswith("-e")]
    assert sorted(map(_normalise, wanted)) == sorted(map(_normalise, listed))
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python and python[0].split("=")[-1] >= "3.11"


def test_results_dependencies_are_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in project["dependencies"]:
        assert "==" in req, f"{req} is not pinned; the numbers in the book depend on it"


def test_cli_lists_its_commands():
    out = subprocess.run([sys.executable, "-m", "dendnorm_flax.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for command in ("data", "reproduce", "book"):
        assert command in out
