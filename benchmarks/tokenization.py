"""Tokenisation throughput on real Chinese text: bert4x vs HF transformers' BertTokenizer.

All 104,100 texts of the shipped KgCLUE (questions, answer fields) and STS-B-zh (sentences),
same vocabulary, same process, timed in turn (HF, ours, HF, ours, ...). Prints the host, then
texts/s for bert4x's batch path (Rust word pieces), its pure-Python path and HF's
``BertTokenizer.__call__`` (also Rust backed), and the ratios to HF.

    python benchmarks/tokenization.py
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from host import interleaved, print_host  # noqa: E402
from pretrained import CHINESE_BERT_VOCAB, chinese_texts  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from transformers import BertTokenizer

    from bert4x.tokenizers import Tokenizer

    texts = chinese_texts()
    ours = Tokenizer(CHINESE_BERT_VOCAB)
    hf = BertTokenizer(vocab=dict(ours.token_to_id))
    assert hf.convert_tokens_to_ids("[CLS]") == 101
    assert ours.encode_batch(texts[:1000])[0] == hf(texts[:1000])["input_ids"]

    contenders = {
        "HF BertTokenizer(texts, return_offsets_mapping=True)":
            lambda: hf(texts, return_offsets_mapping=True),
        "bert4x encode_batch(return_offsets=True)":
            lambda: ours.encode_batch(texts, return_offsets=True),
        "bert4x encode_batch": lambda: ours.encode_batch(texts),
        "bert4x encode, one text at a time (Python path)":
            lambda: [ours.encode(text) for text in texts],
    }
    print_host()
    seconds = interleaved(contenders, args.repeats)
    rows = [(name, len(texts) / seconds[name]) for name in contenders]
    peer = rows[0][1]
    print(f"{len(texts)} real Chinese texts, median of {args.repeats} interleaved runs")
    print(f"{'':52s} {'texts/s':>10s} {'vs HF':>7s}")
    for name, speed in rows:
        print(f"{name:52s} {speed:10.0f} {speed / peer:6.2f}x")


if __name__ == "__main__":
    main()
