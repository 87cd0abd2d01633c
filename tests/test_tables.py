"""Task data and corpora through HF ``datasets``: the same examples, batches and scores as from
files; columns mapped per task; bad rows, missing columns and non-UTF-8 bytes named; Arrow
tables batched without being loaded; streamed corpora that replay by epoch, shard across
workers and resume to the same weights."""

import json

import datasets
import keras
import numpy as np
import pytest

from bert4x import build_transformer_model
from bert4x.cli import main as bert4x_main
from bert4x.config import ConfigError, TransformerConfig
from bert4x.snippets import open as compat_open
from bert4x.tokenizers import Tokenizer
from bert4x.training import (BucketedBatches, DataError, StreamedBatches, build_optimizer,
                             load_table, sequence_padding, text_stream, tokenize_table, train)
from pretrained import CHINESE_BERT_VOCAB, KGCLUE_DIR, STSB_ZH_DIR
from tasks.cosent.data import read_pairs
from tasks.kgclue.data import read_kb, read_questions
from tasks.triple_extraction import SAMPLE, SAMPLE_SCHEMA
from tasks.triple_extraction.data import read_duie, read_schema

TINY = dict(vocab_size=21128, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=96, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def lines_of(path, count):
    return path.read_text(encoding="utf-8").splitlines()[:count]


def renamed_pair_table(pairs_file, directory):
    """The pairs of a TSV file as a table on disk, its columns named as another project would."""
    rows = [line.split("\t") for line in pairs_file.read_text(encoding="utf-8").splitlines()]
    table = datasets.Dataset.from_dict({"text_a": [r[0] for r in rows],
                                        "text_b": [r[1] for r in rows],
                                        "score": [float(r[2]) for r in rows]})
    table.save_to_disk(str(directory))
    return str(directory)


def loss_curve(work_dir):
    return [json.loads(line)["loss"]
            for line in (work_dir / "metrics.jsonl").read_text().splitlines()]


RENAMED = ["--columns", "sentence1=text_a", "sentence2=text_b", "label=score"]


# ---------------------------------------------------------------- readers
def test_every_reader_gives_the_same_examples_from_a_table_a_directory_and_a_loader(tmp_path):
    pairs = read_pairs(STSB_ZH_DIR / "valid.data").examples
    table = datasets.Dataset.from_list([dict(sentence1=p.first, sentence2=p.second,
                                             label=p.label) for p in pairs])
    assert read_pairs(table).examples == pairs
    table.save_to_disk(str(tmp_path / "pairs"))
    assert read_pairs(str(tmp_path / "pairs")).examples == pairs
    table.to_csv(str(tmp_path / "pairs.csv"))
    assert read_pairs(str(tmp_path / "pairs.csv")).examples == pairs

    questions = read_questions(KGCLUE_DIR / "dev.json").examples
    assert read_questions(f"json:{KGCLUE_DIR / 'dev.json'}").examples == questions
    schema = read_schema(SAMPLE_SCHEMA)
    assert read_duie(f"json:{SAMPLE}", schema).examples == read_duie(SAMPLE, schema).examples
    kb = write(tmp_path / "kb.tsv", "姚明\t身高\t226厘米\n刘晓华（教授）\t职业\t教师\n")
    kb_table = datasets.Dataset.from_dict({"s": ["姚明", "刘晓华（教授）"], "p": ["身高", "职业"],
                                           "o": ["226厘米", "教师"]})
    assert (read_kb(kb_table, columns={"subject": "s", "predicate": "p", "object": "o"})
            .examples == read_kb(kb).examples)


def test_a_missing_column_names_the_column_the_task_and_the_mapping_option():
    table = datasets.Dataset.from_dict({"text_a": ["一"], "sentence2": ["二"], "label": [1.0]})
    with pytest.raises(ValueError, match=r"no column 'sentence1', which the cosent task needs; "
                                         r"its columns are text_a, sentence2, label\. Map one "
                                         r"with --columns sentence1=COLUMN"):
        read_pairs(table)
    with pytest.raises(ValueError, match="the kgclue task reads no column named questions"):
        read_questions(table, columns={"questions": "text_a"})
    with pytest.raises(ValueError, match=r"no column 'q' \(mapped from 'question'\)"):
        read_questions(table, columns={"question": "q"})


def test_a_bad_row_is_named_by_its_number_and_can_be_skipped():
    table = datasets.Dataset.from_dict({"sentence1": ["一", "", "三"],
                                        "sentence2": ["二", "二", "四"],
                                        "label": [1.0, 2.0, 9.0]})
    with pytest.raises(DataError, match=r"^<table: 3 rows, columns sentence1, sentence2, "
                                        r"label>:row 2: sentence 1 is empty$"):
        read_pairs(table)
    result = read_pairs(table, label_range=(0, 5), on_error="skip")
    assert len(result.examples) == 1 and [row for row, _ in result.skipped] == [2, 3]
    with pytest.raises(DataError, match=">:0: no usable records in the table"):
        read_pairs(table.select([1]), on_error="skip")


@pytest.mark.parametrize("source", ["{path}", "json:{path}"])
def test_bytes_that_are_not_utf8_are_named_by_file_and_line(tmp_path, source):
    good = lines_of(KGCLUE_DIR / "dev.json", 3)
    path = tmp_path / "dev.json"
    path.write_bytes(("\n".join(good) + "\n").encode() + b'{"question": "\xff"}\n')
    with pytest.raises(DataError, match=r"dev\.json:4: not UTF-8 text \(byte 0xff at column "
                                        r"15\); save the file as UTF-8"):
        read_questions(source.format(path=path))


def test_bert4keras_open_and_config_files_name_bad_bytes_too(tmp_path):
    path = tmp_path / "data.txt"
    path.write_bytes(b"first\nsecond\nthe \xfe one\nlast\n")
    with compat_open(str(path), encoding="utf-8") as handle:
        assert handle.readline() == "first\n"
        with pytest.raises(DataError, match=r"data\.txt:3: not UTF-8 text \(byte 0xfe at "
                                            r"column 5\)"):
            list(handle)
    with compat_open(str(path), encoding="utf-8") as handle, pytest.raises(DataError,
                                                                          match=r"txt:3:"):
        handle.read()
    config = tmp_path / "config.json"
    config.write_bytes(b'{"hidden_size": "\xff"}')
    with pytest.raises(ConfigError, match=r"config\.json: not UTF-8 text \(byte 0xff"):
        TransformerConfig.from_json(str(config))


# ---------------------------------------------------------------- the task commands
@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("task_data")
    sts = [write(root / f"sts_{name}.tsv", "\n".join(lines_of(STSB_ZH_DIR / f"{name}.data", n))
                 + "\n") for name, n in (("train", 48), ("valid", 24))]
    config = write(root / "config.json", json.dumps(TINY))
    qa = lines_of(KGCLUE_DIR / "train.json", 40)
    kgclue = [write(root / "qa_train.json", "\n".join(qa[:32]) + "\n"),
              write(root / "qa_dev.json", "\n".join(qa[32:]) + "\n")]
    duie = lines_of(SAMPLE, 16)
    triples = [write(root / "duie_train.json", "\n".join(duie[:12]) + "\n"),
               write(root / "duie_dev.json", "\n".join(duie[12:]) + "\n")]
    return dict(root=root, sts=sts, config=str(config), kgclue=kgclue, triples=triples)


def test_cosent_trains_to_the_same_scores_from_files_and_from_renamed_tables(tmp_path,
                                                                            task_data):
    train_file, dev_file = task_data["sts"]
    common = ["cosent", "train", "--config", task_data["config"], "--random-init", "--vocab",
              str(CHINESE_BERT_VOCAB), "--epochs", "2", "--batch-size", "8",
              "--learning-rate", "1e-3"]
    assert bert4x_main([*common, "--train", str(train_file), "--dev", str(dev_file),
                        "--test", str(dev_file), "--work-dir", str(tmp_path / "files")]) == 0
    tables = [renamed_pair_table(path, tmp_path / path.stem) for path in (train_file, dev_file)]
    assert bert4x_main([*common, "--train", tables[0], "--dev", tables[1], "--test", tables[1],
                        *RENAMED, "--work-dir", str(tmp_path / "tables")]) == 0
    from_files, from_tables = (json.loads((tmp_path / run / "results.json").read_text())
                               for run in ("files", "tables"))
    assert from_tables == from_files
    assert from_files["cosent"]["dev"] != from_files["untrained"]["dev"]  # it trained
    curves = [loss_curve(tmp_path / run) for run in ("files", "tables")]
    assert len(curves[0]) == 2 and curves[0] == curves[1]  # the same batches: the same losses


def test_kgclue_and_triples_train_to_the_same_scores_from_files_and_loaders(
        tmp_path, task_data, capsys):
    vocab = str(CHINESE_BERT_VOCAB)
    train_file, dev_file = task_data["kgclue"]
    kb = str(tmp_path / "kb")
    assert bert4x_main(["kgclue", "build-kb", str(train_file), str(dev_file),
                        "--from-answers", "--vocab", vocab, "--output", kb]) == 0
    scores = []
    for name, sources in (("files", (train_file, dev_file)),
                          ("loaders", (f"json:{train_file}", f"json:{dev_file}"))):
        run = str(tmp_path / f"kgclue_{name}")
        assert bert4x_main(["kgclue", "train", "--config", task_data["config"], "--vocab", vocab,
                            "--random-init", "--kb", kb, "--train", str(sources[0]), "--dev",
                            str(sources[1]), "--epochs", "1", "--batch-size", "16",
                            "--dev-limit", "4", "--beam-size", "1", "--work-dir", run]) == 0
        capsys.readouterr()
        assert bert4x_main(["kgclue", "evaluate", "--work-dir", run, "--data", str(sources[1]),
                            "--beam-size", "1"]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[0] == scores[1] and scores[0]["questions"] == 8

    train_file, dev_file = task_data["triples"]
    scores = []
    for name, sources in (("files", (train_file, dev_file)),
                          ("loaders", (f"json:{train_file}", f"json:{dev_file}"))):
        run = str(tmp_path / f"triples_{name}")
        assert bert4x_main(["triples", "train", "--config", task_data["config"], "--vocab",
                            vocab, "--random-init", "--model", "bert", "--train",
                            str(sources[0]), "--dev", str(sources[1]), "--schema",
                            str(SAMPLE_SCHEMA), "--epochs", "1", "--kind", "pointer_cln",
                            "--maxlen", "64",
                            "--work-dir", run]) == 0
        capsys.readouterr()
        assert bert4x_main(["triples", "evaluate", "--work-dir", run, "--data",
                            str(sources[1])]) == 0
        scores.append(capsys.readouterr().out)
    assert scores[0] == scores[1] and "ALL" in scores[0]


def test_the_task_commands_name_a_missing_column(tmp_path, task_data, capsys):
    train_file, dev_file = task_data["sts"]
    table = renamed_pair_table(train_file, tmp_path / "renamed")
    assert bert4x_main(["cosent", "train", "--config", task_data["config"], "--random-init",
                        "--vocab", str(CHINESE_BERT_VOCAB), "--train", table, "--dev",
                        str(dev_file), "--work-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "no column 'sentence1', which the cosent task needs" in error, error
    with pytest.raises(SystemExit) as refused:  # argparse's refusal of a bad option
        bert4x_main(["cosent", "evaluate", "--work-dir", str(tmp_path / "run"), "--data",
                     table, "--columns", "sentence1"])
    assert refused.value.code == 2
    assert "--columns takes NAME=COLUMN pairs, got 'sentence1'" in capsys.readouterr().err


# ---------------------------------------------------------------- Arrow tables as batches
def test_bucketed_batches_on_a_memory_mapped_tokenised_table_equal_those_of_a_list(tmp_path):
    pairs = read_pairs(STSB_ZH_DIR / "valid.data").examples[:300]
    datasets.Dataset.from_list([dict(sentence1=p.first, sentence2=p.second, label=p.label)
                                for p in pairs]).save_to_disk(str(tmp_path / "pairs"))
    tokenizer = Tokenizer(CHINESE_BERT_VOCAB)
    table = tokenize_table(load_table(str(tmp_path / "pairs")), tokenizer,
                           ["sentence1", "sentence2"], maxlen=32, num_proc=1)
    assert table.cache_files and all(f["filename"].startswith(str(tmp_path))
                                     for f in table.cache_files)  # on disk, memory-mapped
    again = tokenize_table(load_table(str(tmp_path / "pairs")), tokenizer,
                           ["sentence1", "sentence2"], maxlen=32, num_proc=2, cache=False)
    assert again["sentence1_ids"] == table["sentence1_ids"]  # two processes, same ids
    assert tokenize_table(load_table(str(tmp_path / "pairs")), tokenizer,
                          ["sentence1", "sentence2"], maxlen=32).cache_files == \
        table.cache_files  # the second tokenisation read the cache

    first = tokenizer.encode_batch([p.first for p in pairs], maxlen=32)[0]
    second = tokenizer.encode_batch([p.second for p in pairs], maxlen=32)[0]
    as_list = [dict(sentence1_ids=a, sentence2_ids=b, label=p.label)
               for a, b, p in zip(first, second, pairs)]

    def collate(rows):
        return (sequence_padding([r["sentence1_ids"] for r in rows]),
                sequence_padding([r["sentence2_ids"] for r in rows])), \
            np.array([r["label"] for r in rows], "float32")

    def length(row):
        return max(len(row["sentence1_ids"]), len(row["sentence2_ids"]))

    from_list = BucketedBatches(as_list, 16, collate, length=length, seed=3, bucket_batches=4)
    from_table = BucketedBatches(table, 16, collate, seed=3, bucket_batches=4,
                                 lengths=np.asarray(table["length"]))
    assert from_table.examples is table  # nothing was copied out of the table
    for epoch in (0, 1):
        from_list.set_epoch(epoch)
        from_table.set_epoch(epoch)
        assert len(from_list) == len(from_table) == 19
        for index in range(len(from_list)):
            keras.tree.map_structure(np.testing.assert_array_equal, from_table[index],
                                     from_list[index])


def test_shards_of_bucketed_batches_add_up_to_the_global_batches():
    examples = [[1] * n for n in np.random.default_rng(0).integers(1, 30, 100)]

    whole = BucketedBatches(examples, 8, list, seed=5, epoch_size=64)
    shards = [BucketedBatches(examples, 8, list, seed=5, epoch_size=64, shard=(i, 2))
              for i in range(2)]
    for epoch in (0, 3):
        for batches in (whole, *shards):
            batches.set_epoch(epoch)
        assert len(shards[0]) == len(shards[1]) == len(whole) == 8
        for index in range(len(whole)):
            assert sorted(map(len, shards[0][index] + shards[1][index])) == \
                sorted(map(len, whole[index]))
    with pytest.raises(ValueError, match="batch_size 9 does not split over 2 workers"):
        BucketedBatches(examples, 9, list, shard=(0, 2))


# ---------------------------------------------------------------- streamed corpora
def numbered_corpus(directory, files=1, texts=60):
    """Text files whose line ``i`` is ``i`` repeated (its length varies), so each example says
    where it came from."""
    paths = []
    for f in range(files):
        numbers = range(f * texts, (f + 1) * texts)
        paths.append(str(write(directory / f"part{f}.txt",
                               "".join(f"{' '.join([str(n)] * (1 + n % 7))}\n"
                                       for n in numbers))))
    return paths


def texts_of(batch):
    return [int(text.split()[0]) for text in batch]


def text_batches(paths, steps, shard=None, seed=0, batch_size=8):
    return StreamedBatches(text_stream(paths), batch_size, steps, collate=list,
                           examples_of=lambda row: (row["text"],), seed=seed, shard=shard,
                           length=len, bucket_batches=2, buffer_size=16)


def test_a_stream_uses_every_text_once_a_pass_and_replays_any_epoch_alone(tmp_path):
    paths = numbered_corpus(tmp_path, files=2, texts=32)  # 64 texts: two epochs of 4 × 8 a pass
    stream = text_batches(paths, steps=4)
    epochs = []
    for epoch in range(6):
        stream.set_epoch(epoch)
        epochs.append([texts_of(stream[i]) for i in range(len(stream))])
    for first in (0, 2, 4):
        one_pass = sorted(n for epoch in epochs[first:first + 2] for batch in epoch
                          for n in batch)
        assert one_pass == list(range(64))
    assert epochs[0:2] != epochs[2:4]  # the next pass is shuffled otherwise
    for epoch in (5, 1):  # a new run started at that epoch, as a resumed one is
        alone = text_batches(paths, steps=4)
        alone.set_epoch(epoch)
        assert [texts_of(alone[i]) for i in range(4)] == epochs[epoch]
    assert texts_of(alone[2]) == epochs[1][2] and texts_of(alone[0]) == epochs[1][0]  # any order
    for batch in epochs[0]:
        assert len(batch) == 8


def test_streamed_shards_read_their_own_texts_and_add_up_to_every_text(tmp_path):
    for files in (1, 2):  # example-level, then file-level split
        (tmp_path / f"{files}").mkdir()
        paths = numbered_corpus(tmp_path / f"{files}", files=files, texts=48 // files)
        shards = [text_batches(paths, steps=3, shard=(i, 2)) for i in range(2)]
        seen = [[n for i in range(3) for n in texts_of(shard[i])] for shard in shards]
        assert all(len(batch) == 4 for shard in shards for batch in
                   (shard[i] for i in range(3)))  # half the global batch of 8 each
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == sorted(set(seen[0]) | set(seen[1]))
        again = text_batches(paths, steps=3, shard=(1, 2))
        assert [n for i in range(3) for n in texts_of(again[i])] == seen[1]
        if files == 2:  # whole files: each worker reads only its own
            assert len({n // 24 for n in seen[0]}) == len({n // 24 for n in seen[1]}) == 1


def test_a_run_killed_mid_epoch_on_a_stream_resumes_to_the_same_weights(tmp_path):
    rng = np.random.default_rng(0)
    rows = [dict(ids=[int(t) for t in rng.integers(5, 200, rng.integers(3, 20))],
                 label=int(rng.integers(2))) for _ in range(50)]
    source = datasets.Dataset.from_list(rows)

    def collate(batch):
        ids = sequence_padding([row["ids"] for row in batch])
        return (ids, np.zeros_like(ids)), np.array([row["label"] for row in batch], "int32")

    def run(work_dir, callbacks=()):
        keras.utils.set_random_seed(1)
        encoder = build_transformer_model(dict(TINY, vocab_size=200, hidden_dropout_prob=0.2))
        cls = keras.layers.Lambda(lambda x: x[:, 0])(encoder.output)
        model = keras.Model(encoder.inputs, keras.layers.Dense(2, name="out")(cls))
        model.compile(optimizer=build_optimizer(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        batches = StreamedBatches(source, 8, 4, collate, length=lambda row: len(row["ids"]),
                                  seed=7, bucket_batches=2, buffer_size=20)
        train(model, batches, 3, str(work_dir), callbacks=callbacks, seed=7, verbose=0)
        return model.get_layer("out").weights[0].numpy()

    class KillMidEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:
                raise KeyboardInterrupt

    whole = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", [KillMidEpoch()])
    resumed = run(tmp_path / "cut")
    np.testing.assert_allclose(resumed, whole, atol=1e-6)
    curves = [loss_curve(tmp_path / run) for run in ("whole", "cut")]
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-5)


def test_train_refuses_a_raw_table_and_a_sharded_dataset_under_tf_multi_worker(tmp_path,
                                                                                monkeypatch):
    from bert4x.training import loop

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(TypeError, match="wrap it in BucketedBatches"):
        train(model, datasets.Dataset.from_dict({"x": [1]}), 1, str(tmp_path))
    sharded = BucketedBatches([[1.0, 2.0]] * 8, 4, list, shard=(0, 2))
    monkeypatch.setattr(loop, "worker_count", lambda: 2)
    if keras.backend.backend() == "tensorflow":
        with pytest.raises(ValueError, match="give every worker the whole batches"):
            train(model, sharded, 1, str(tmp_path))
