"""Knowledge-base prefix tree: bert4x's flat-array Trie vs the dict-of-dicts of the KgCLUE baseline.

Keys are shaped like KgCLUE's: ``subject [SEP] predicate [SEP] sense [SEP]`` token ids from the
Chinese BERT vocabulary. Subject lengths, their characters, the predicates, senses and objects
are drawn from the real KgCLUE answers shipped in ``pretrained/data/kgclue``; a subject has ~7
predicates, as 20.6M triples over ~3M subjects do. Each trie is built in its own fresh process
from the same seeded stream of keys and reports build time, memory it holds afterwards, peak
memory while building, bytes per key and next-token lookups per second.

    python benchmarks/trie.py                          # 1M keys, both tries
    python benchmarks/trie.py --keys 20000000 --only bert4x   # full scale (the dict needs ~30 GB)
"""

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from host import memory_kib, release_free_memory  # noqa: E402

PREDICATES_PER_SUBJECT = 7
LOOKUPS = 20000


def kgclue_pools():
    """Tokenised pieces of the real KgCLUE answers: subject characters (with frequencies),
    subject lengths, predicates, senses and objects."""
    from bert4x.tokenizers import Tokenizer
    from pretrained import CHINESE_BERT_VOCAB, KGCLUE_DIR

    tokenizer = Tokenizer(CHINESE_BERT_VOCAB)
    subjects, predicates, senses, objects = [], set(), set(), []
    for split in ("train", "dev", "test_public"):
        with open(KGCLUE_DIR / f"{split}.json", encoding="utf-8") as handle:
            for line in handle:
                subject, predicate, value = json.loads(line)["answer"].split(" ||| ")
                name, _, sense = subject.partition("（")
                subjects.append(tokenizer.encode(name)[0][1:-1])
                predicates.add(predicate)
                senses.add(sense.rstrip("）"))
                objects.append(value)
    characters, counts = np.unique(np.concatenate(subjects), return_counts=True)
    ids = lambda text: np.asarray(tokenizer.encode(text)[0][1:-1], "int64")  # noqa: E731
    return dict(characters=characters, weights=counts / counts.sum(),
                lengths=np.array([len(s) for s in subjects if s]),
                predicates=[ids(p) for p in sorted(predicates)],
                senses=[ids(s) for s in sorted(senses)], objects=objects,
                sep=tokenizer.sep_id)


def synthetic_kb(count, seed, pools):
    """``count`` (key ids, object) pairs; the same stream for the same seed."""
    rng = np.random.default_rng(seed)
    sep = np.array([pools["sep"]])
    produced = 0
    while produced < count:
        subject = rng.choice(pools["characters"], rng.choice(pools["lengths"]),
                             p=pools["weights"])
        sense = pools["senses"][rng.integers(len(pools["senses"]))] \
            if rng.random() < 0.27 else np.zeros(0, "int64")
        for index in rng.choice(len(pools["predicates"]), PREDICATES_PER_SUBJECT, replace=False):
            if produced == count:
                return
            key = np.concatenate([subject, sep, pools["predicates"][index], sep, sense, sep])
            yield key, pools["objects"][rng.integers(len(pools["objects"]))]
            produced += 1


class DictTrie:
    """The baseline: nested dicts keyed by token id, objects in a list under a marker key."""

    END = -1

    def __init__(self):
        self.root = {}

    def add(self, key, value):
        node = self.root
        for token in key.tolist():
            node = node.setdefault(token, {})
        node.setdefault(self.END, []).append(value)

    def next_tokens(self, prefix):
        node = self.root
        for token in prefix:
            node = node[token]
        return [token for token in node if token != self.END]


def measure(kind, keys, seed, pools, queue):
    """Build one trie in this (fresh) process and report its numbers."""
    from bert4x.generation import Trie

    release_free_memory()
    before = memory_kib("VmRSS")
    start = time.perf_counter()
    trie = Trie() if kind == "bert4x" else DictTrie()
    for key, value in synthetic_kb(keys, seed, pools):
        trie.add(key, value)
    if kind == "bert4x":
        trie.build()
    seconds = time.perf_counter() - start
    release_free_memory()
    held = memory_kib("VmRSS") - before
    peak = memory_kib("VmHWM") - before
    on_disk = None
    if kind == "bert4x":
        directory = tempfile.mkdtemp()
        trie.save(directory)
        on_disk = sum(os.path.getsize(os.path.join(directory, name))
                      for name in os.listdir(directory))
        shutil.rmtree(directory)
    rng = np.random.default_rng(seed + 1)
    prefixes = [key[:rng.integers(0, len(key))].tolist()
                for key, _ in synthetic_kb(min(LOOKUPS, keys), seed, pools)]
    start = time.perf_counter()
    for prefix in prefixes:
        trie.next_tokens(prefix)
    lookups = len(prefixes) / (time.perf_counter() - start)
    queue.put(dict(kind=kind, seconds=seconds, held_kib=held, peak_kib=peak, on_disk=on_disk,
                   lookups=lookups))


def run_isolated(kind, keys, seed, pools):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=measure, args=(kind, keys, seed, pools, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["bert4x", "dict"])
    args = parser.parse_args()

    pools = kgclue_pools()
    kinds = [args.only] if args.only else ["bert4x", "dict"]
    results = {kind: run_isolated(kind, args.keys, args.seed, pools) for kind in kinds}
    print(f"{args.keys:,} KgCLUE-shaped keys (subject [SEP] predicate [SEP] sense [SEP])")
    print(f"{'trie':<8} {'build s':>8} {'held MiB':>9} {'peak MiB':>9} {'B/key':>7} "
          f"{'disk MiB':>9} {'lookups/s':>10}")
    for kind, r in results.items():
        disk = f"{r['on_disk'] / 2 ** 20:9.1f}" if r["on_disk"] else f"{'-':>9}"
        print(f"{kind:<8} {r['seconds']:8.1f} {r['held_kib'] / 1024:9.1f} "
              f"{r['peak_kib'] / 1024:9.1f} {r['held_kib'] * 1024 / args.keys:7.1f} {disk} "
              f"{r['lookups']:10,.0f}")
    if len(results) == 2:
        ours, theirs = results["bert4x"], results["dict"]
        print(f"memory held: bert4x / dict = {ours['held_kib'] / theirs['held_kib']:.3f}; "
              f"lookups: bert4x / dict = {ours['lookups'] / theirs['lookups']:.2f}x")


if __name__ == "__main__":
    main()
