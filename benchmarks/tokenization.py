"""Tokenisation throughput on real Chinese text: bert4x vs HF transformers' BertTokenizer.

All 104,100 texts of the shipped KgCLUE (questions, answer fields) and STS-B-zh (sentences),
same vocabulary, same process.  Prints texts/s for bert4x's batch path (Rust word pieces), its
pure-Python path and HF's ``BertTokenizer.__call__`` (also Rust backed), and the ratios to HF.

    python benchmarks/tokenization.py
"""

import argparse
import statistics
import time

from pretrained import CHINESE_BERT_VOCAB, chinese_texts


def texts_per_second(function, texts, repeats):
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(texts)
        seconds.append(time.perf_counter() - start)
    return len(texts) / statistics.median(seconds)


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

    rows = [
        ("HF BertTokenizer(texts, return_offsets_mapping=True)",
         texts_per_second(lambda t: hf(t, return_offsets_mapping=True), texts, args.repeats)),
        ("bert4x encode_batch(return_offsets=True)",
         texts_per_second(lambda t: ours.encode_batch(t, return_offsets=True), texts,
                          args.repeats)),
        ("bert4x encode_batch", texts_per_second(ours.encode_batch, texts, args.repeats)),
        ("bert4x encode, one text at a time (Python path)",
         texts_per_second(lambda t: [ours.encode(x) for x in t], texts, args.repeats)),
    ]
    peer = rows[0][1]
    print(f"{len(texts)} real Chinese texts, median of {args.repeats} runs")
    print(f"{'':52s} {'texts/s':>10s} {'vs HF':>7s}")
    for name, speed in rows:
        print(f"{name:52s} {speed:10.0f} {speed / peer:6.2f}x")


if __name__ == "__main__":
    main()
