"""A T5-style encoder-decoder fine-tuned through the shared training loop on the shipped KgCLUE
questions (question -> answer triple), at smoke size: the loss falls, the run resumes, and the
cached decoder reads the trained model."""

import json

import keras
import numpy as np
import pytest

from bert4x import build_transformer_model
from bert4x.generation import AutoRegressiveDecoder
from bert4x.tokenizers import Tokenizer, load_vocab
from bert4x.training import BucketedBatches, build_optimizer, sequence_padding, train
from pretrained import CHINESE_BERT_VOCAB, KGCLUE_DIR

T5_TINY = dict(d_model=48, d_kv=12, d_ff=96, num_layers=2, num_heads=4, dropout_rate=0.0,
               feed_forward_proj="gated-gelu")


@pytest.fixture(scope="module")
def pairs_and_tokenizer():
    token_dict, _ = load_vocab(CHINESE_BERT_VOCAB, simplified=True)
    tokenizer = Tokenizer(token_dict)
    with open(KGCLUE_DIR / "train.json", encoding="utf-8") as handle:
        records = [json.loads(line) for _, line in zip(range(96), handle)]
    pairs = [(tokenizer.encode(r["question"], maxlen=48)[0],
              tokenizer.encode(r["answer"].replace(" ||| ", "|"), maxlen=48)[0][1:])
             for r in records]  # targets: the answer's pieces and [SEP] as the end token
    return pairs, tokenizer


def collate(pairs):
    """Encoder ids; decoder inputs (start id 0, then the target shifted right); the target;
    weights that leave padding out of the loss."""
    sources = sequence_padding([source for source, _ in pairs])
    targets = sequence_padding([target for _, target in pairs])
    decoder_inputs = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
    return (sources, decoder_inputs), targets, (targets != 0).astype("float32")


def test_t5_fine_tunes_on_kgclue_and_decodes(pairs_and_tokenizer, tmp_path):
    pairs, tokenizer = pairs_and_tokenizer
    keras.utils.set_random_seed(0)
    model = build_transformer_model(dict(T5_TINY, vocab_size=tokenizer.vocab_size),
                                    model="t5.1.1", with_mlm="linear")
    model.compile(optimizer=build_optimizer(3e-3, weight_decay=0.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[])
    data = BucketedBatches(pairs, batch_size=16, collate=collate,
                           length=lambda pair: len(pair[0]) + len(pair[1]))
    history = train(model, data, epochs=8, work_dir=str(tmp_path / "run"), verbose=0)
    losses = history.history["loss"]
    assert all(np.diff(losses) < 0) and losses[-1] < 0.7 * losses[0], losses
    # The trained model decodes through the encoder-decoder cache as it does without it.
    source = pairs[0][0]
    cached = AutoRegressiveDecoder(model, end_id=tokenizer.sep_id, max_new_tokens=12)
    full = AutoRegressiveDecoder(model, end_id=tokenizer.sep_id, max_new_tokens=12,
                                 use_cache=False)
    assert cached.beam_search(source, beam_size=2)[0].tokens == \
        full.beam_search(source, beam_size=2)[0].tokens


@pytest.mark.parametrize("options", [{}, dict(cross_position_bias=True,
                                              scale_decoder_outputs=True)],
                         ids=["hf-form", "bert4keras-form"])
def test_encoder_decoder_cache_changes_nothing_but_speed(options):
    """Beams and scores with the encoder-decoder cache equal those of re-running the whole
    model, with bert4keras' cross-attention bias too."""
    keras.utils.set_random_seed(3)
    model = build_transformer_model(dict(T5_TINY, vocab_size=50, num_decoder_layers=3,
                                         relative_attention_num_buckets=8,
                                         relative_attention_max_distance=12, **options),
                                    model="t5.1.1")
    source = [5, 9, 14, 3, 22, 31, 8, 17, 40, 2, 11, 7]
    cached = AutoRegressiveDecoder(model, end_id=None, max_new_tokens=10)
    full = AutoRegressiveDecoder(model, end_id=None, max_new_tokens=10, use_cache=False)
    ours, reference = cached.beam_search(source, beam_size=3), full.beam_search(source, beam_size=3)
    assert [h.tokens for h in ours] == [h.tokens for h in reference]
    np.testing.assert_allclose([h.score for h in ours], [h.score for h in reference], atol=1e-4)
