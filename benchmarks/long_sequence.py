"""Long inputs: FLASH mixed-chunk attention vs quadratic GAU vs standard multi-head attention.

One layer of each at base size (hidden 768; attention: 12 heads of 64; GAU/FLASH: e = 1536,
s = 128, FLASH chunks of 256), batch 1, CPU, float32, TensorFlow graphs. For each length, one
process times the three layers in turn (attention, GAU, FLASH, attention, ...; the median of a
few forward passes after a warm-up), and each (layer, length) runs once more in a process of its
own so that its peak resident memory can be read. Prints the host, a table (with each figure's
ratio to standard attention, the named peer) and writes a PNG plot.

    python benchmarks/long_sequence.py                       # 512 ... 8192 tokens
    python benchmarks/long_sequence.py --lengths 512 1024    # quick check
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
KINDS = ("attention", "gau", "flash")


def forward_function(kind, length):
    """One layer of ``kind`` and an input of ``length`` tokens, as a call that waits for the
    result."""
    import numpy as np
    import tensorflow as tf

    from bert4x.layers import GatedAttentionUnit, MultiHeadAttention

    if kind == "attention":
        layer = MultiHeadAttention(12, 64)
    elif kind == "gau":
        layer = GatedAttentionUnit(1536, key_size=128, normalization="relu2")
    else:
        layer = GatedAttentionUnit(1536, key_size=128, normalization="relu2", chunk_size=256)
    x = tf.constant(np.random.default_rng(0).normal(size=(1, length, 768)), "float32")
    forward = tf.function(lambda inputs: layer(inputs), jit_compile=False)
    return lambda: forward(x).numpy()


def time_all(length, repeats):
    """Run in a child process: median seconds per forward pass of each layer, interleaved."""
    from host import interleaved

    return interleaved({kind: forward_function(kind, length) for kind in KINDS}, repeats)


def peak_memory(kind, length):
    """Run in a child process: the memory the first forward pass of ``kind`` adds at its peak
    (a second pass would reuse what TensorFlow's allocator kept from the first). The peak is
    reset first: measured from the process' lifetime peak instead, any pass smaller than what
    building the layer had freed read as 0 MB."""
    from host import memory_kib, release_free_memory, reset_peak_memory

    forward = forward_function(kind, length)
    release_free_memory()
    reset_peak_memory()
    baseline = memory_kib("VmRSS")
    forward()
    return (memory_kib("VmHWM") - baseline) / 1024


def child(*arguments):
    """The JSON a child process printed last, or None (and the reason) if it failed."""
    done = subprocess.run([sys.executable, __file__, *map(str, arguments)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{' '.join(map(str, arguments))} failed: {done.stderr.strip()[-300:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plot", default="long_sequence.png")
    parser.add_argument("--time", type=int, metavar="LENGTH", help=argparse.SUPPRESS)
    parser.add_argument("--memory", nargs=2, metavar=("KIND", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time:
        print(json.dumps(time_all(args.time, args.repeats)))
        return
    if args.memory:
        print(json.dumps(peak_memory(args.memory[0], int(args.memory[1]))))
        return

    from host import print_host
    print_host()
    results = {}
    for length in args.lengths:
        seconds = child("--time", length, "--repeats", args.repeats)
        for kind in KINDS:
            peak_mb = child("--memory", kind, length)
            results[kind, length] = None if seconds is None or peak_mb is None else \
                {"seconds": seconds[kind], "peak_mb": peak_mb}

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
