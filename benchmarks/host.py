"""What every benchmark prints first, and how it times: the host and its matmul limit, and
interleaved timing.

Figures differ between hosts (one host's torch BLAS was 3x slower than another's), so a ratio
is only meaningful with the host beside it, and the measured matmul rate of the running Keras
backend bounds what any encoder can reach there. Timing the contenders in turn (A, B, A, B)
lets load from other processes hit all of them alike.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable, Dict

#: The CPU flags that decide float32/bfloat16/int8 matmul speed.
_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")


def cpu_description() -> str:
    """CPU model, core count and the matmul-relevant flags, from /proc/cpuinfo."""
    model, flags, cores = platform.processor() or "unknown CPU", set(), 0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model, cores = value.strip(), cores + 1
                elif key == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    present = [flag for flag in _FLAGS if flag in flags]
    return f"{model}, {cores} logical cores, flags: {' '.join(present) or 'none of ' + str(_FLAGS)}"


def matmul_gflops(dtype: str = "float32", repeats: int = 5) -> float:
    """[4096x768]·[768x3072] on the running Keras backend (compiled on TF and JAX, one BLAS call
    on PyTorch), the result kept where it was computed. On TF the faster of XLA and a plain
    graph: XLA's CPU matmul does not use the BF16 instructions, oneDNN's does (bfloat16 419
    against 198 GFLOP/s on the project's host)."""
    import keras
    import numpy as np
    from keras import ops

    rng = np.random.default_rng(0)
    a = ops.cast(rng.normal(size=(4096, 768)), dtype)
    b = ops.cast(rng.normal(size=(768, 3072)), dtype)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        # Keras' matmul: int8 by int8 gives int32 there, as quantized layers compute it.
        products = [tf.function(ops.matmul, jit_compile=xla) for xla in (True, False)]
        seconds = interleaved({f"xla={xla}": (lambda p=p: p(a, b))
                               for xla, p in zip((True, False), products)}, repeats)
        return 2 * 4096 * 768 * 3072 / min(seconds.values()) / 1e9  # TF's CPU ops return when done
    if backend == "jax":
        import jax
        product = jax.jit(ops.matmul)
        wait = lambda result: result.block_until_ready()  # noqa: E731
    else:
        import torch
        product = ops.matmul  # eager: the BLAS call itself (torch._int_mm at int8)
        wait = lambda result: result  # noqa: E731  CPU torch returns when done
    seconds = interleaved({"matmul": lambda: wait(product(a, b))}, repeats)["matmul"]
    return 2 * 4096 * 768 * 3072 / seconds / 1e9


def matmul_limits(dtypes=("float32", "bfloat16")) -> str:
    """The measured matmul limit at each of ``dtypes``, as one phrase (int8 is int8 by int8 into
    int32, in giga integer operations per second)."""
    return ", ".join(f"{dtype} {matmul_gflops(dtype):.0f} "
                     + ("GOP/s (into int32)" if dtype == "int8" else "GFLOP/s")
                     for dtype in dtypes)


def print_host(dtypes=("float32", "bfloat16")) -> None:
    import keras
    print(f"host: {cpu_description()}")
    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}: matmul limit "
          f"{matmul_limits(dtypes)} (measured, [4096x768]x[768x3072], no host copy)")


def interleaved(functions: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """Median seconds per call of each function, timed in turn after one warm-up call each."""
    for function in functions.values():
        function()  # tracing, compilation, allocator
    seconds = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in seconds.items()}


def memory_kib(field: str) -> int:
    """A field of /proc/self/status in KiB: ``VmRSS`` (resident now), ``VmHWM`` (peak)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_memory() -> None:
    """Make VmHWM (peak resident memory) start again from what is resident now (Linux's
    ``clear_refs``), so a peak read afterwards belongs to what ran since, not to building."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def release_free_memory() -> None:
    """Return freed heap pages to the OS so resident memory shows what is still held."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def print_rates(seconds: Dict[str, float], batch: int, baseline: str, peer: str,
                extra: Dict[str, Dict[str, str]] = None) -> None:
    """One row per contender: sequences/s, its ratio to ``baseline`` (ours) and to ``peer``
    (theirs), then the ``extra`` columns (title -> contender -> formatted value)."""
    extra = extra or {}
    print(f"{'contender':28s} {'seq/s':>8s} {'vs ' + baseline:>28s} {'vs ' + peer:>11s}"
          + "".join(f" {title:>13s}" for title in extra))
    for name, time in seconds.items():
        print(f"{name:28s} {batch / time:8.2f} {seconds[baseline] / time:28.2f} "
              f"{seconds[peer] / time:11.2f}"
              + "".join(f" {column[name]:>13s}" for column in extra.values()))

