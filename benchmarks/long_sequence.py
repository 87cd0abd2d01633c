"""Long inputs: FLASH mixed-chunk attention vs quadratic GAU vs standard multi-head attention.

One layer of each at base size (hidden 768; attention: 12 heads of 64; GAU/FLASH: e = 1536,
s = 128, FLASH chunks of 256), batch 1, CPU, float32. Each (layer, length) runs in its own
process so that its peak resident memory can be read; time is the median of a few forward
passes after a warm-up. Prints a table (with each figure's ratio to standard attention, the
named peer) and writes a PNG plot.

    python benchmarks/long_sequence.py                       # 512 ... 8192 tokens
    python benchmarks/long_sequence.py --lengths 512 1024    # quick check
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
KINDS = ("attention", "gau", "flash")


def measure(kind, length, repeats):
    """Run in a child process: build one layer, time its forward pass, report peak memory."""
    import numpy as np
    import tensorflow as tf

    from bert4x.layers import GatedAttentionUnit, MultiHeadAttention

    hidden = 768
    if kind == "attention":
        layer = MultiHeadAttention(12, 64)
    elif kind == "gau":
        layer = GatedAttentionUnit(1536, key_size=128, normalization="relu2")
    else:
        layer = GatedAttentionUnit(1536, key_size=128, normalization="relu2", chunk_size=256)
    x = tf.constant(np.random.default_rng(0).normal(size=(1, length, hidden)), "float32")
    forward = tf.function(lambda inputs: layer(inputs), jit_compile=False)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    forward(x).numpy()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(x).numpy()
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": statistics.median(seconds), "peak_mb": (peak - baseline) / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plot", default="long_sequence.png")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.repeats)))
        return

    results = {}
    for length in args.lengths:
        for kind in KINDS:
            child = subprocess.run([sys.executable, __file__, "--one", kind, str(length),
                                    "--repeats", str(args.repeats)],
                                   capture_output=True, text=True)
            if child.returncode != 0:
                results[kind, length] = None
                print(f"{kind} at {length} tokens failed: {child.stderr.strip()[-300:]}")
                continue
            results[kind, length] = json.loads(child.stdout.strip().splitlines()[-1])

    print("one layer, batch 1, CPU, float32; ratio = figure / standard attention's")
    print(f"{'tokens':>7s} | " + " | ".join(f"{k + ' ms':>13s} {'ratio':>5s}" for k in KINDS)
          + " | " + " | ".join(f"{k + ' MB':>13s} {'ratio':>5s}" for k in KINDS))
    for length in args.lengths:
        peer = results.get(("attention", length))
        cells = []
        for field, scale in (("seconds", 1000), ("peak_mb", 1)):
            for kind in KINDS:
                value = results.get((kind, length))
                if value is None or peer is None:
                    cells.append(f"{'failed':>13s} {'':>5s}")
                else:
                    cells.append(f"{value[field] * scale:13.1f} {value[field] / max(peer[field], 1e-9):5.2f}")
        print(f"{length:7d} | " + " | ".join(cells[:3]) + " | " + " | ".join(cells[3:]))

    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, 2, figsize=(10, 4))
    for axis, field, label in ((axes[0], "seconds", "forward time (s)"),
                               (axes[1], "peak_mb", "peak memory (MB)")):
        for kind in KINDS:
            points = [(n, results[kind, n][field]) for n in args.lengths if results.get((kind, n))]
            if points:
                axis.plot(*zip(*points), marker="o", label=kind)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("tokens")
        axis.set_title(label)
        axis.legend()
    figure.tight_layout()
    figure.savefig(args.plot)
    print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
