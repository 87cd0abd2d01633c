"""Bad input that used to get through silently or as a traceback: each now gives a clear error
(``file:line: reason``, ``key: reason`` or the option that took it)."""

import json

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

from bert4x import build_transformer_model
from bert4x.checkpoints import CheckpointError
from bert4x.config import ConfigError
from bert4x.cli import main as bert4x_main
from bert4x.input_checks import failed_check_message
from bert4x.tokenizers import Tokenizer
from bert4x.training import DataError, WarmupDecay, build_optimizer, read_text_lines
from pretrained import CHINESE_BERT_VOCAB, STSB_ZH_DIR
from tasks.cosent.data import read_pairs

CONFIG = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=24, max_position_embeddings=16)


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- data files
def test_a_byte_order_mark_is_not_part_of_the_first_field(tmp_path):
    path = write_bytes(tmp_path / "pairs.tsv", "\ufeff一个\t两个\t1\n".encode("utf-8"))
    assert read_pairs(path).examples[0].first == "一个"


def test_text_that_is_not_utf8_names_file_line_and_byte(tmp_path):
    path = write_bytes(tmp_path / "pairs.tsv",
                       "一\t二\t1\n".encode() * 3 + b"a\xffb\tc\t2\n")
    with pytest.raises(DataError, match=r"pairs\.tsv:4: not UTF-8 text \(byte 0xff at column 2\)"):
        read_pairs(path)


def test_mixed_line_endings_keep_line_numbers(tmp_path):
    path = write_bytes(tmp_path / "pairs.tsv", b"a\tb\t1\r\nc\td\t2\re\tf\n")
    with pytest.raises(DataError, match=r"pairs\.tsv:3: expected 3 tab-separated fields"):
        read_pairs(path)


@pytest.mark.parametrize("label", ["nan", "inf", "-inf", "NaN"])
def test_labels_that_are_not_finite_are_refused(tmp_path, label):
    path = write_bytes(tmp_path / "pairs.tsv", f"一\t二\t1\n三\t四\t{label}\n".encode())
    with pytest.raises(DataError, match=rf"pairs\.tsv:2: label '{label}' is not a finite number"):
        read_pairs(path)


def test_text_lines_keep_blank_lines_when_asked(tmp_path):
    path = write_bytes(tmp_path / "texts.txt", "一\n   \n\n二\n".encode())
    assert read_text_lines(path) == ["一", "二"]
    assert read_text_lines(path, keep_blank=True) == ["一", "   ", "", "二"]
    with pytest.raises(DataError, match=r"empty\.txt:0: no texts"):
        read_text_lines(write_bytes(tmp_path / "empty.txt", b" \n\n"))


# ---------------------------------------------------------------- tokenizer
def test_maxlen_that_leaves_no_room_for_text_is_refused():
    tokenizer = Tokenizer(CHINESE_BERT_VOCAB)
    with pytest.raises(ValueError, match="maxlen=2 leaves no room for text.*maxlen >= 3"):
        tokenizer.encode("一个", maxlen=2)
    with pytest.raises(ValueError, match="maxlen=4 leaves no room for text.*maxlen >= 5"):
        tokenizer.encode("一个", "两个", maxlen=4)
    assert tokenizer.encode("一个", maxlen=3)[0] == [tokenizer.cls_id,
                                                    tokenizer.token_to_id["一"], tokenizer.sep_id]


# ---------------------------------------------------------------- learning rates and counts
@pytest.mark.parametrize("rate", [0.0, -0.01, float("nan")])
def test_learning_rates_that_cannot_train_are_refused(rate):
    with pytest.raises(ValueError, match="learning_rate must be a finite number above 0"):
        build_optimizer(rate)
    with pytest.raises(ValueError, match="peak_learning_rate must be a finite number above 0"):
        WarmupDecay(rate, 10)


@pytest.mark.parametrize("option, value, message", [
    ("--learning-rate", "-0.01", "argument --learning-rate: must be a finite number above 0, "
                                 "got -0.01"),
    ("--learning-rate", "0", "argument --learning-rate: must be a finite number above 0"),
    ("--epochs", "0", "argument --epochs: must be at least 1, got 0"),
    ("--batch-size", "x", "argument --batch-size: expected a whole number, got 'x'"),
    ("--maxlen", "2", "argument --maxlen: must be at least 3, got 2"),
])
@pytest.mark.parametrize("task", ["cosent", "kgclue", "triples"])
def test_task_options_refuse_numbers_that_cannot_work(task, option, value, message, capsys,
                                                      tmp_path):
    if task == "kgclue" and option == "--maxlen":
        option = "--question-maxlen"
        message = message.replace("--maxlen", "--question-maxlen")
    required = {"cosent": ["--train", "t", "--dev", "d"],
                "kgclue": ["--kb", "k", "--train", "t", "--dev", "d"],
                "triples": ["--train", "t", "--dev", "d", "--schema", "s"]}[task]
    with pytest.raises(SystemExit) as exit:
        bert4x_main([task, "train", *required, "--work-dir", str(tmp_path), option, value])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------- the untrained baseline row
def test_the_random_init_untrained_row_follows_the_seed(tmp_path):
    from tasks.cosent.task import Settings, compare_objectives

    config = tmp_path / "config.json"
    config.write_text(json.dumps(dict(CONFIG, vocab_size=21128, max_position_embeddings=64)))
    settings = Settings(config=str(config), vocab=str(CHINESE_BERT_VOCAB))
    pairs = read_pairs(STSB_ZH_DIR / "valid.data").examples[:64]

    def untrained(seed):
        return compare_objectives(settings, (), pairs, {"dev": pairs}, str(tmp_path / "run"),
                                  seed=seed)["untrained"]["dev"]

    first = untrained(7)
    build_transformer_model(CONFIG)  # other models built in between change nothing
    assert untrained(7) == first
    assert untrained(8) != first


# ---------------------------------------------------------------- model inputs
def test_a_vocabulary_larger_than_the_token_table_is_refused_when_the_task_builds(tmp_path):
    from tasks.cosent.task import Settings, build_sentence_encoder

    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    with pytest.raises(ValueError, match=r"vocab\.txt has 21128 tokens but the model's token "
                                         r"table has 40 rows"):
        build_sentence_encoder(Settings(config=str(config), vocab=str(CHINESE_BERT_VOCAB)))
    config.write_text(json.dumps(dict(CONFIG, vocab_size=21128)))
    with pytest.raises(ValueError, match=r"maxlen 64 is longer than the model's position table "
                                         r"\(max_position_embeddings=16"):
        build_sentence_encoder(Settings(config=str(config), vocab=str(CHINESE_BERT_VOCAB)))


@pytest.mark.parametrize("ids, segments, message", [
    ([[1, 50, 2]], [[0, 0, 0]], "Embedding-Token: an input id is negative or >= the vocabulary "
                                "size 40"),
    ([[1, 5, 2]], [[0, 2, 0]], "Embedding-Segment: an input id is negative or >= the "
                               "vocabulary size 2"),
    ([[1] * 20], [[0] * 20], "Embedding-Position: sequence is longer than "
                             "max_position_embeddings=16"),
])
def test_a_bad_id_at_predict_time_reaches_the_user_as_its_message(ids, segments, message):
    model = build_transformer_model(CONFIG)
    with pytest.raises(Exception) as error:
        model.predict([np.array(ids), np.array(segments)], verbose=0)
    assert failed_check_message(error.value) == message
    assert failed_check_message(ValueError("assertion failed: [x]")) is None


# ---------------------------------------------------------------- checkpoints
def hf_bert_file(tmp_path):
    built = build_transformer_model(CONFIG, return_keras_model=False)
    return built, built.export_huggingface(tmp_path / "hf")


def test_a_safetensors_file_with_damaged_data_is_refused(tmp_path):
    _, directory = hf_bert_file(tmp_path)
    path = tmp_path / "hf" / "model.safetensors"
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    start, _ = json.loads(data[8:8 + size])["bert.embeddings.word_embeddings.weight"][
        "data_offsets"]
    start += 8 + size
    data[start:start + 400] = b"\xff" * 400  # 100 float32 NaN bit patterns, header intact
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: 1 tensors hold NaN or "
                                              r"infinite values: bert\.embeddings\.word_embeddings"
                                              r"\.weight \(100 of 640\).*check_finite=False"):
        build_transformer_model(CONFIG, directory)
    model = build_transformer_model(CONFIG, directory, check_finite=False)
    assert np.isnan(model.get_layer("Embedding-Token").embeddings.numpy()).sum() == 100


def test_an_infinite_weight_is_refused_too(tmp_path):
    built, directory = hf_bert_file(tmp_path)
    path = tmp_path / "hf" / "model.safetensors"
    from safetensors.numpy import load_file

    tensors = load_file(path)
    tensors["bert.encoder.layer.0.output.dense.bias"][3] = np.inf
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match=r"output\.dense\.bias \(1 of 16\)"):
        built.load_checkpoint(directory)


@pytest.mark.parametrize("saved, loaded, family", [
    ("roformer", "bert", 'RoFormer checkpoint: use model="roformer"'),
    ("bert", "roformer", 'BERT checkpoint: use model="bert"'),
    ("roformer_v2", "roformer", 'RoFormer-V2 checkpoint: use model="roformer_v2"'),
    ("roformer", "roformer_v2", 'RoFormer checkpoint: use model="roformer"'),
    ("albert", "bert", 'ALBERT checkpoint: use model="albert"'),
    ("electra", "bert", 'ELECTRA checkpoint: use model="electra"'),
    ("bert", "albert", 'BERT checkpoint: use model="bert"'),
])
def test_a_checkpoint_of_another_family_names_it(tmp_path, saved, loaded, family):
    prefix = build_transformer_model(CONFIG, model=saved, return_keras_model=False) \
        .save_google_checkpoint(tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError, match=f"this looks like a {family}") as error:
        build_transformer_model(CONFIG, prefix, model=loaded)
    assert "allow_missing" not in str(error.value)


@pytest.mark.parametrize("model, options, message", [
    ("bert", dict(with_discriminator=True), "with_discriminator is ELECTRA's head"),
    ("electra", dict(with_pool=True), "has no pooler"),
    ("electra", dict(application="unilm"), "application must be one of \\('encoder',\\)"),
    ("electra", dict(with_mlm=True, with_discriminator=True), "separate models"),
    ("albert", dict(num_hidden_groups=2), "'num_hidden_groups' = 2 is not supported"),
    ("albert", dict(inner_group_num=2), "'inner_group_num' = 2 is not supported"),
    ("gpt2", dict(application="encoder"), "application must be one of \\('lm',\\)"),
    ("gpt2_ml", dict(type_vocab_size=2), "no segment embedding"),
    ("gpt2", dict(type_vocab_size=2), "no segment embedding"),
    ("gpt2", dict(embd_pdrop=0.2), "'embd_pdrop' \\(0.2\\) must equal 'resid_pdrop'"),
    ("t5", dict(application="lm"), "application must be one of \\('seq2seq', 'encoder'\\)"),
    ("t5", dict(talking_heads=True), "talking_heads is not a T5 option"),
    ("t5", dict(feed_forward_proj="fancy-gelu"), "'feed_forward_proj' = 'fancy-gelu' is not"),
    ("t5", dict(num_decoder_layers=0), "'num_decoder_layers' must be an integer >= 1"),
    ("bert", dict(tie_word_embeddings=False), "tie_word_embeddings=false is a T5 option"),
])
def test_heads_and_settings_a_family_lacks_are_refused(model, options, message):
    with pytest.raises((ValueError, ConfigError), match=message):
        build_transformer_model(CONFIG, model=model, **options)


def test_gpt2_and_bert_files_name_their_family_when_loaded_as_the_other(tmp_path):
    gpt2 = dict(CONFIG, type_vocab_size=0)
    prefix = build_transformer_model(CONFIG, model="bert", return_keras_model=False) \
        .save_google_checkpoint(tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError, match='looks like a BERT checkpoint: use model="bert"'):
        build_transformer_model(gpt2, prefix, model="gpt2")
    build_transformer_model(gpt2, model="gpt2", return_keras_model=False) \
        .export_huggingface(tmp_path / "gpt2")
    with pytest.raises(CheckpointError, match='looks like a GPT-2 checkpoint: use model="gpt2"'):
        build_transformer_model(CONFIG, tmp_path / "gpt2", model="bert")


def test_albert_unshared_has_no_albert_file_to_export_to(tmp_path):
    built = build_transformer_model(CONFIG, model="albert_unshared", return_keras_model=False)
    with pytest.raises(CheckpointError, match="one block that every layer shares"):
        built.export_huggingface(tmp_path)


def test_convert_onto_a_file_is_a_message_not_a_traceback(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    prefix = build_transformer_model(config, return_keras_model=False).save_google_checkpoint(
        tmp_path / "model.ckpt")
    occupied = tmp_path / "taken"
    occupied.write_text("not a directory")
    for target in (occupied, occupied / "inside"):
        assert bert4x_main(["convert", "--config", str(config), "--checkpoint", prefix,
                            "--to-hf", str(target)]) == 2
        assert f"{occupied} is a file, not a directory" in capsys.readouterr().err
    assert occupied.read_text() == "not a directory"
    keras.backend.clear_session()
