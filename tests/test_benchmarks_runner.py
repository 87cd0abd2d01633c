"""``python -m benchmarks``: runs the chosen benchmarks and writes one results file with the
host facts, each benchmark's command and its table; a benchmark that needs trained runs is
named as skipped under --quick, not silently left out."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*arguments):
    return subprocess.run([sys.executable, "-m", "benchmarks", *arguments], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_the_runner_writes_host_facts_and_each_table(tmp_path):
    results = tmp_path / "RESULTS.md"
    done = run("--quick", "--only", "trie", "task_precision", "--output", str(results))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = results.read_text(encoding="utf-8")
    assert "- Host: " in text and "GFLOP/s, bfloat16 " in text
    assert "`python benchmarks/trie.py --keys 20000`" in text
    assert "memory held: bert4x / dict = " in text  # the trie benchmark's own ratio line
    assert "## task_precision" in text and "Skipped by --quick" in text
    assert "I0000" not in text  # framework log lines are left out


def test_an_unknown_benchmark_is_refused():
    done = run("--only", "nonesuch")
    assert done.returncode == 2 and "invalid choice: 'nonesuch'" in done.stderr
