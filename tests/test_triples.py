"""Triple extraction: DuIE reading, lossless label encoding, metrics, training, command line."""

import json
import warnings

import pytest

from bert4x.cli import main as bert4x_main
from bert4x.training import DataError
from pretrained.registry import default_model
from tasks.triple_extraction import SAMPLE, SAMPLE_SCHEMA
from tasks.triple_extraction.data import Example, Triple, read_duie, read_schema
from tasks.triple_extraction.metrics import triple_scores
from tasks.triple_extraction.spans import spans_to_triples
from tasks.triple_extraction.task import Extractor, Settings, train_extractor

TINY = dict(vocab_size=21128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32)
SCHEMA = read_schema(SAMPLE_SCHEMA)
EXAMPLES = read_duie(SAMPLE, SCHEMA).examples


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    return str(write(tmp_path_factory.mktemp("cfg") / "config.json", json.dumps(TINY)))


def tiny_settings(config, kind):
    from pretrained import CHINESE_BERT_VOCAB

    return Settings(config=config, vocab=str(CHINESE_BERT_VOCAB), schema=str(SAMPLE_SCHEMA),
                    kind=kind)


def test_sample_covers_the_overlap_patterns():
    def has(pattern):
        return any(pattern(e.triples) for e in EXAMPLES)

    assert len(EXAMPLES) >= 30
    assert has(lambda ts: any(sum(t.subject == s.subject and t.predicate == s.predicate
                                  for t in ts) > 1 for s in ts))  # one subject, many objects
    assert has(lambda ts: any(sum(t.object == s.object and t.predicate == s.predicate
                                  for t in ts) > 1 for s in ts))  # many subjects, one object
    assert has(lambda ts: any(sum((t.subject, t.object) == (s.subject, s.object)
                                  for t in ts) > 1 for s in ts))  # several predicates, one pair
    assert has(lambda ts: any(a.subject != b.object and a.subject in b.object
                              for a in ts for b in ts) or
               any(a.object in a.subject and a.object != a.subject for a in ts))  # nested spans
    texts = " ".join(e.text for e in EXAMPLES)
    assert any(c.isascii() and c.isalpha() for c in texts) and any(c.isdigit() for c in texts)
    assert "（" in texts and "，" in texts


@pytest.mark.parametrize("kind", ["gplinker", "pointer_cln"])
def test_encoding_then_decoding_labels_gives_back_the_gold_triples(tiny_config, kind):
    extractor = Extractor(tiny_settings(tiny_config, kind))
    labelled = extractor.label(EXAMPLES)
    decoded = [spans_to_triples(text, extractor.model.decode_labels(text), SCHEMA)
               for text in labelled]
    if kind == "gplinker":
        assert triple_scores(decoded, [e.triples for e in EXAMPLES])["all"]["f1"] == 1.0
        return
    # Pointers pair each start with the nearest end, so of two subjects that start together
    # only the shorter survives: 《哈利·波特与魔法石》 and 《哈利·波特》. Everything else is exact.
    lost = {t for e, d in zip(EXAMPLES, decoded) for t in set(e.triples) - set(d)}
    assert lost == {Triple("哈利·波特与魔法石", "作者", "J.K.罗琳")}
    assert all(set(d) <= set(e.triples) for e, d in zip(EXAMPLES, decoded))


def test_reader_errors_name_file_line_and_predicate(tmp_path):
    duie2 = {"text": "《晴天》是周杰伦演唱的歌曲", "spo_list": [
        {"subject": "晴天", "predicate": "歌手", "object": {"@value": "周杰伦"},
         "subject_type": "歌曲", "object_type": {"@value": "人物"}}]}
    (example,) = read_duie(write(tmp_path / "a.json", json.dumps(duie2, ensure_ascii=False)),
                           SCHEMA).examples
    assert example.triples == [Triple("晴天", "歌手", "周杰伦")]
    cases = {
        '{"text": "没有三元组"}': "missing field 'spo_list'",
        '{"text": "", "spo_list": []}': "empty text",
        '{"text": "x", "spo_list": [{"subject": "x", "predicate": "祖籍", "object": "x"}]}':
            "unknown predicate '祖籍'",
    }
    for line, message in cases.items():
        with pytest.raises(DataError, match=f"b.json:2: {message}"):
            read_duie(write(tmp_path / "b.json", json.dumps(duie2, ensure_ascii=False) + "\n"
                            + line + "\n"), SCHEMA)
    texts_only = read_duie(write(tmp_path / "c.json", '{"text": "没有三元组"}\n'), SCHEMA,
                           require_triples=False).examples
    assert texts_only[0].triples == []


def test_entities_missing_from_the_text_are_counted_and_skipped(tiny_config):
    extractor = Extractor(tiny_settings(tiny_config, "gplinker"))
    example = Example("《晴天》是周杰伦演唱的歌曲", [Triple("晴天", "歌手", "周杰伦"),
                                         Triple("稻香", "歌手", "周杰伦")])
    with pytest.warns(UserWarning, match="1 triples skipped.*'稻香' not in the text"):
        (labelled,) = extractor.label([example])
    assert len(labelled.spans) == 1
    with pytest.raises(ValueError, match="empty"):
        extractor.extract(["好", ""])


def test_scores_are_micro_averaged_and_per_predicate():
    gold = [[Triple("a", "作者", "b"), Triple("c", "歌手", "d")], [Triple("e", "作者", "f")]]
    predicted = [[Triple("a", "作者", "b"), Triple("c", "歌手", "x")], []]
    scores = triple_scores(predicted, gold)
    assert scores["all"]["precision"] == 0.5 and scores["all"]["recall"] == pytest.approx(1 / 3)
    assert scores["all"]["f1"] == pytest.approx(0.4)
    assert scores["per_predicate"]["作者"]["recall"] == 0.5
    assert scores["per_predicate"]["歌手"]["f1"] == 0.0


@pytest.mark.slow
@pytest.mark.one_backend
# The pointer model sits at F1 0 for ~25 epochs (its sigmoids start out predicting no span)
# before it climbs, so it gets a longer schedule.
@pytest.mark.parametrize("kind, epochs", [("gplinker", 50), ("pointer_cln", 60)])
def test_both_models_overfit_the_sample_and_evaluate_held_out_text(tmp_path, kind, epochs):
    settings = Settings(**default_model(), schema=str(SAMPLE_SCHEMA), kind=kind)
    training, held_out = EXAMPLES[:-6], EXAMPLES[-6:]  # the held-out texts are never trained on
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extractor = train_extractor(settings, training, training, tmp_path, epochs=epochs,
                                    batch_size=4, learning_rate=1e-3, verbose=0)
    assert not [w for w in caught if "triples skipped" in str(w.message)]  # all placeable
    assert extractor.evaluate(training)["all"]["f1"] > 0.95
    scores = extractor.evaluate(held_out)["all"]
    found = extractor.extract([e.text for e in held_out])
    correct = sum(len(set(f) & set(e.triples)) for f, e in zip(found, held_out))
    predicted = sum(len(set(f)) for f in found)
    assert scores["gold"] == sum(len(e.triples) for e in held_out)
    assert (scores["correct"], scores["predicted"]) == (correct, predicted)
    assert scores["precision"] == pytest.approx(correct / predicted if predicted else 0.0)
    assert scores["recall"] == pytest.approx(correct / scores["gold"])


def test_cli_trains_evaluates_and_predicts(tmp_path, tiny_config, capsys):
    from pretrained import CHINESE_BERT_VOCAB

    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    train = write(tmp_path / "train.json", "\n".join(lines[:12]) + "\n")
    dev = write(tmp_path / "dev.json", "\n".join(lines[12:16]) + "\n")
    run = str(tmp_path / "run")
    assert bert4x_main(["triples", "train", "--config", tiny_config, "--vocab",
                        str(CHINESE_BERT_VOCAB), "--model", "bert", "--train", str(train),
                        "--dev", str(dev), "--schema", str(SAMPLE_SCHEMA), "--epochs", "1",
                        "--kind", "pointer_cln", "--work-dir", run]) == 0
    assert bert4x_main(["triples", "evaluate", "--work-dir", run, "--data", str(dev)]) == 0
    assert "ALL" in capsys.readouterr().out
    # A spaces-only line still gets its output line, so line i answers line i.
    texts = write(tmp_path / "texts.txt", "《晴天》是周杰伦演唱的歌曲。\n   \n姚明出生于上海。\n")
    output = tmp_path / "out.json"
    assert bert4x_main(["triples", "predict", "--work-dir", run, "--input", str(texts),
                        "--output", str(output)]) == 0
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == ["《晴天》是周杰伦演唱的歌曲。", "   ", "姚明出生于上海。"]
    assert all(isinstance(r["spo_list"], list) for r in records)
    assert records[1]["spo_list"] == []
