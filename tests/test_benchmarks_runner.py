"""``python -m benchmarks``: runs the chosen benchmarks and writes one results file with the
host facts, each benchmark's command and its table; a benchmark that needs trained runs is
named as skipped under --quick, not silently left out; ``--only`` keeps the file's other
sections."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*arguments):
    return subprocess.run([sys.executable, "-m", "benchmarks", *arguments], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_the_runner_writes_host_facts_and_each_table_and_keeps_the_others(tmp_path):
    results = tmp_path / "RESULTS.md"
    earlier = ["# Benchmark results", "", "- Last run long ago", "", "## decode", "",
               "an earlier decode table", "", "## trie", "", "an earlier trie table", ""]
    results.write_text("\n".join(earlier), encoding="utf-8")
    done = run("--quick", "--only", "trie", "task_precision", "--output", str(results))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = results.read_text(encoding="utf-8")
    assert "kept from earlier runs: decode\n" in text and "an earlier decode table" in text
    assert "an earlier trie table" not in text and "Last run long ago" not in text
    # In the order of the benchmark list, whatever order they were run or kept in.
    assert text.index("## task_precision") < text.index("## decode") < text.index("## trie")
    # Each section says when and at which commit it ran, since sections may come from runs apart.
    assert re.search(r"`python benchmarks/trie.py --keys 20000`: \d+ s, run "
                     r"\d{4}-\d\d-\d\d \d\d:\d\d UTC at commit \w+", text)
    assert "- Host: " in text and "GFLOP/s, bfloat16 " in text
    assert "`python benchmarks/trie.py --keys 20000`" in text
    assert "memory held: bert4x / dict = " in text  # the trie benchmark's own ratio line
    assert "## task_precision" in text and "Skipped by --quick" in text
    assert "I0000" not in text  # framework log lines are left out


def test_an_unknown_benchmark_is_refused():
    done = run("--only", "nonesuch")
    assert done.returncode == 2 and "invalid choice: 'nonesuch'" in done.stderr
