"""Beam-search decoding speed: bert4x with its key/value cache vs re-reading the whole sequence.

A 6-layer, 384-hidden RoFormer UniLM (the RoFormer-V2-small shape, Chinese vocabulary size) with
random weights decodes exactly ``--new-tokens`` tokens (no end token) with beam ``--beam`` after a
``--prefix``-token source, in the same process, on the CPU, on the running Keras backend
(``KERAS_BACKEND``), timed in turn. Both modes must return the same beams.

    python benchmarks/decode.py                     # 64 new tokens, beam 4
    python benchmarks/decode.py --layers 2 --new-tokens 16 --repeats 1   # quick check
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from host import interleaved, print_host  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=21128)
    parser.add_argument("--prefix", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import keras
    import numpy as np

    from bert4x import build_transformer_model
    from bert4x.generation import AutoRegressiveDecoder

    keras.utils.set_random_seed(0)
    model = build_transformer_model(
        dict(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
             num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        model="roformer", application="unilm", with_mlm=True)
    prefix = np.random.default_rng(0).integers(1, args.vocab, args.prefix).tolist()
    results = {}

    def search(name, use_cache):
        decoder = AutoRegressiveDecoder(model, end_id=None, max_new_tokens=args.new_tokens,
                                        use_cache=use_cache)

        def run():
            results[name] = decoder.beam_search(prefix, beam_size=args.beam)
        return run

    print_host()
    seconds = interleaved({"KV cache": search("KV cache", True),
                           "no cache": search("no cache", False)}, args.repeats)
    same = [h.tokens for h in results["KV cache"]] == [h.tokens for h in results["no cache"]]
    gap = max(abs(a.log_prob - b.log_prob) for a, b in zip(results["KV cache"],
                                                            results["no cache"]))
    steps = args.new_tokens
    print(f"{args.layers}-layer {args.hidden}-hidden RoFormer UniLM, prefix {args.prefix}, "
          f"{steps} new tokens, beam {args.beam} (median of {args.repeats}), backend "
          f"{keras.backend.backend()}")
    print(f"{'mode':<10} {'seconds':>8} {'ms/token':>9}")
    for name, value in seconds.items():
        print(f"{name:<10} {value:8.2f} {1000 * value / steps:9.1f}")
    print(f"speed-up of the cache: {seconds['no cache'] / seconds['KV cache']:.1f}x; "
          f"same beams: {same}; largest score gap {gap:.2e}")


if __name__ == "__main__":
    main()
