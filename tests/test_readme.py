"""The README and the guide show only what runs: the README's tour runs as written, and each
``bert4x`` command line in their shell blocks is accepted by the command-line parser (flags and
arguments as documented)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bert4x.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDE = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")


def shell_commands(text):
    """Each ``bert4x ...`` line of ``text``'s bash blocks, with its ``NAME=value`` variables
    substituted and optional ``[--flag]`` parts dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        variables = {}
        for line in block.replace("\\\n", " ").splitlines():
            assignment = re.fullmatch(r"\s*(\w+)=(\S+)\s*", line)
            if assignment:
                variables[assignment.group(1)] = assignment.group(2)
            elif line.strip().startswith("bert4x "):
                for name, value in variables.items():
                    line = line.replace("$" + name, value)
                commands.append(re.sub(r"\s*\[[^]]*\]", "", line).strip())
    return commands


def test_the_readme_has_its_two_setup_commands_and_task_commands():
    assert "```bash\npip install -e . && bert4x demo\nbash .ci/run\n```" in README
    assert len(shell_commands(README)) >= 9


@pytest.mark.parametrize("command", shell_commands(README) + shell_commands(GUIDE))
def test_each_documented_command_line_parses(command):
    try:
        build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as error:
        pytest.fail(f"documented command rejected by the parser (exit {error.code}): {command}")


def test_the_tour_runs_as_written(tmp_path):
    tour = README.split("## A 30-second tour", 1)[1].split("```python\n", 1)[1].split("```")[0]
    done = subprocess.run([sys.executable, "-c", tour], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "(2, 9, 256)"
    assert lines[-1] == "['北京']"  # what the README's comment says
    assert (tmp_path / "runs" / "tour" / "metrics.jsonl").exists()
