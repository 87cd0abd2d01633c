"""Beam-search decoding speed: the key/value cache against re-reading, and against HF ``generate``.

Two tables, each timed in turn (A, B, A, B) in one process on the running Keras backend
(``KERAS_BACKEND``), every run decoding exactly ``--new-tokens`` tokens (no end token) with
beam ``--beam``:

1. A ``--layers``-layer, ``--hidden``-wide RoFormer UniLM (the RoFormer-V2-small shape, Chinese
   vocabulary size) with random weights, after a source of each ``--prefixes`` length: bert4x
   with its key/value cache against re-reading every row's whole sequence at each step. Both
   must return the same beams.
2. The same shape as a GPT-2 language model: one set of random weights in HF's
   ``GPT2LMHeadModel`` (PyTorch, saved and loaded through bert4x's HF loader), decoded by
   bert4x's cached beam search and by HF ``generate(num_beams=..., use_cache=True)``. Both must
   return the same beams.

    python benchmarks/decode.py                     # 64 new tokens, beam 4, sources of 64 and 256
    python benchmarks/decode.py --layers 1 --new-tokens 8 --prefixes 16 --repeats 1   # quick
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from host import interleaved, print_host  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=21128)
    parser.add_argument("--prefixes", type=int, nargs="+", default=[64, 256],
                        help="source lengths of the cache-against-re-reading table")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import keras

    print_host()
    print(f"{args.layers}-layer {args.hidden}-hidden, vocabulary {args.vocab:,}, "
          f"{args.new_tokens} new tokens, beam {args.beam}, median of {args.repeats}, backend "
          f"{keras.backend.backend()}")
    cache_against_rereading(args)
    against_hf_generate(args)


def cache_against_rereading(args):
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
    print("\nRoFormer UniLM: the key/value cache against re-reading the whole sequence")
    print(f"{'source':>6} {'cache ms/token':>15} {'re-read ms/token':>17} {'speed-up':>9} "
          f"{'same beams':>11} {'score gap':>10}")
    for length in args.prefixes:
        prefix = np.random.default_rng(length).integers(1, args.vocab, length).tolist()
        results = {}

        def search(name, use_cache):
            decoder = AutoRegressiveDecoder(model, end_id=None, max_new_tokens=args.new_tokens,
                                            use_cache=use_cache)

            def run():
                results[name] = decoder.beam_search(prefix, beam_size=args.beam)
            if use_cache:
                warm_up_past_the_xla_switch(decoder, run)
            return run

        seconds = interleaved({"cache": search("cache", True),
                               "re-read": search("re-read", False)}, args.repeats)
        same = [h.tokens for h in results["cache"]] == [h.tokens for h in results["re-read"]]
        gap = max(abs(a.log_prob - b.log_prob)
                  for a, b in zip(results["cache"], results["re-read"]))
        per_token = {name: 1000 * value / args.new_tokens for name, value in seconds.items()}
        print(f"{length:>6} {per_token['cache']:15.1f} {per_token['re-read']:17.1f} "
              f"{seconds['re-read'] / seconds['cache']:8.1f}x {str(same):>11} {gap:10.1e}")


def warm_up_past_the_xla_switch(decoder, run):
    """On TensorFlow, ``run`` searches until the beam's step shape has passed the switch to XLA
    (:class:`~bert4x.generation.runners.XlaOnceRepeated`), so that its compilation (1-2 s)
    falls before the timed runs, not inside one of them."""
    from bert4x.generation.runners import XLA_AFTER_CALLS, XlaOnceRepeated

    step = decoder.runner.step_function
    while isinstance(step, XlaOnceRepeated) and \
            max(step.calls.values(), default=0) <= XLA_AFTER_CALLS:
        run()


def against_hf_generate(args):
    import numpy as np
    import torch
    import transformers

    from bert4x import build_transformer_model
    from bert4x.generation import AutoRegressiveDecoder

    torch.manual_seed(0)
    reference = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=args.vocab, n_embd=args.hidden, n_layer=args.layers, n_head=args.heads,
        n_positions=max(args.prefixes) + args.new_tokens, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=None, eos_token_id=None, pad_token_id=0)).eval()
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        model = build_transformer_model(os.path.join(folder, "config.json"), folder,
                                        model="gpt2")
    length = args.prefixes[0]
    prefix = np.random.default_rng(length).integers(1, args.vocab, length).tolist()
    decoder = AutoRegressiveDecoder(model, end_id=None, max_new_tokens=args.new_tokens)
    warm_up_past_the_xla_switch(decoder, lambda: decoder.beam_search(prefix,
                                                                     beam_size=args.beam))
    options = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                   do_sample=False, num_beams=args.beam, num_return_sequences=args.beam,
                   length_penalty=0.0, suppress_tokens=[0], use_cache=True)
    results = {}

    def ours():
        results["ours"] = [h.tokens for h in decoder.beam_search(prefix, beam_size=args.beam)]

    def hf():
        with torch.no_grad():
            output = reference.generate(torch.tensor([prefix]), **options)
        results["hf"] = output[:, length:].tolist()

    seconds = interleaved({"bert4x": ours, "HF generate": hf}, args.repeats)
    print(f"\nGPT-2, one set of weights, source {length}: bert4x's cached beam search against "
          f"HF generate (PyTorch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"use_cache=True)")
    print(f"{'contender':<12} {'seconds':>8} {'ms/token':>9} {'vs HF':>6}")
    for name, value in seconds.items():
        print(f"{name:<12} {value:8.2f} {1000 * value / args.new_tokens:9.1f} "
              f"{seconds['HF generate'] / value:5.2f}x")
    print(f"same beams as HF: {results['ours'] == results['hf']}")


if __name__ == "__main__":
    main()
