"""KgCLUE task: official metric, readers, KB index, constrained answering, command line."""

import json

import keras
import pytest

from bert4x.cli import main as bert4x_main
from bert4x.tokenizers import Tokenizer
from bert4x.training import DataError
from pretrained import CHINESE_BERT_VOCAB, KGCLUE_DIR
from tasks.kgclue.data import Question, make_triple, read_kb, read_questions, split_sense
from tasks.kgclue.kb import KnowledgeBase, key_ids
from tasks.kgclue.metrics import f1_similarity, lcs_length, score
from tasks.kgclue.task import Answerer, Settings, build_seq2seq, evaluate

TINY = dict(vocab_size=21128, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32)


def test_metric_matches_the_official_formula_on_hand_made_cases():
    assert lcs_length("abcde", "ace") == 3 and lcs_length("", "abc") == 0
    assert f1_similarity("北京", "北京") == 1.0
    assert f1_similarity("北京", "上海") == 0.0
    assert f1_similarity("", "") == 0.0  # the official script scores two empty strings 0
    assert f1_similarity("", "上海") == 0.0
    assert f1_similarity("abc", "abd") == pytest.approx(2 * 2 / 6)
    em, f1, total = score(["北京", "", "abc"], ["北京", "", "abd"])
    assert em == pytest.approx(2 / 3)
    assert f1 == pytest.approx((1 + 0 + 4 / 6) / 3)
    assert total == pytest.approx((em + f1) / 2)
    with pytest.raises(ValueError, match="as many"):
        score(["a"], ["a", "b"])


def test_subject_sense_is_split_as_in_the_reference():
    assert split_sense("刘晓华（广东工业大学教授）") == ("刘晓华", "广东工业大学教授")
    assert split_sense("龙编站") == ("龙编站", "")
    assert split_sense("（无名）") == ("（无名）", "")
    triple = make_triple("rio（BACCHUS公司推出的RIO酒）", "代言人", "周迅2013，  杨洋")
    assert (triple.subject, triple.sense, triple.object) == ("rio", "BACCHUS公司推出的RIO酒",
                                                             "周迅2013， 杨洋")
    assert triple.answer() == "rio（BACCHUS公司推出的RIO酒） ||| 代言人 ||| 周迅2013， 杨洋"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_readers_report_file_and_line(tmp_path):
    questions = read_questions(KGCLUE_DIR / "dev.json").examples
    assert len(questions) == 2000 and questions[0].answer.predicate == "主讲课程"
    bad = write(tmp_path / "q.json", '{"id": 1, "question": "谁?", "answer": "a ||| b"}\n')
    with pytest.raises(DataError, match=r"q.json:1: answer must be 'subject \|\|\| predicate"):
        read_questions(bad)
    kb_file = write(tmp_path / "kb.txt", "北京\t人口\t2000万\n坏行\n上海\t人口\t2400万\n")
    result = read_kb(kb_file)
    assert len(result) == 2 and result.skipped == [(2, "expected 3 tab-separated fields, "
                                                        "found 1")]
    with pytest.raises(DataError, match="kb.txt:2"):
        read_kb(kb_file, on_error="raise")


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(CHINESE_BERT_VOCAB)


def test_kb_keeps_every_object_of_a_key_in_order_and_round_trips(tmp_path, tokenizer):
    kb_file = write(tmp_path / "kb.txt", "李白（唐代诗人）\t代表作\t静夜思\n"
                                         "李白（唐代诗人）\t代表作\t将进酒\n"
                                         "李白\t国籍\t中国\nbad line\n")
    kb, skipped = KnowledgeBase.from_file(kb_file, tokenizer, progress=False)
    assert len(kb) == 2 and len(skipped) == 1
    (key,) = key_ids(tokenizer, ["李白"], ["唐代诗人"], ["代表作"])
    assert [t.object for t in kb.lookup(key)] == ["静夜思", "将进酒"]
    assert kb.lookup(key)[0].answer() == "李白（唐代诗人） ||| 代表作 ||| 静夜思"
    assert kb.lookup([1, 2, 3]) == []
    loaded = KnowledgeBase.load(kb.save(tmp_path / "index"))
    assert [t.object for t in loaded.lookup(key)] == ["静夜思", "将进酒"]
    with pytest.raises(FileNotFoundError, match="build-kb"):
        KnowledgeBase.load(tmp_path / "missing")


@pytest.fixture(scope="module")
def small_setup(tmp_path_factory, tokenizer):
    """A random tiny UniLM and the sub-KB of 300 real training answers."""
    directory = tmp_path_factory.mktemp("kgclue")
    questions = read_questions(KGCLUE_DIR / "train.json").examples[:300]
    from tasks.kgclue.data import answer_triples

    kb = KnowledgeBase.build(answer_triples(questions), tokenizer)
    kb.save(directory / "kb")
    config = write(directory / "config.json", json.dumps(TINY))
    settings = Settings(config=str(config), vocab=str(CHINESE_BERT_VOCAB),
                        kb=str(directory / "kb"), question_maxlen=16, key_maxlen=40)
    keras.utils.set_random_seed(0)
    return settings, build_seq2seq(settings, tokenizer), kb, questions


@pytest.mark.parametrize("lookahead", [True, False])
def test_constrained_answers_are_always_kb_keys(small_setup, tokenizer, lookahead):
    settings, model, kb, questions = small_setup
    answerer = Answerer(model, tokenizer, kb, settings, beam_size=2, lookahead=lookahead)
    long_question = questions[0].question * 20  # longer than question_maxlen: truncated
    for question in [long_question] + [q.question for q in questions[:6]]:
        triple, ids = answerer.generate(question)
        assert tuple(ids) in kb.trie and triple in kb.lookup(ids)


def test_evaluation_reports_gold_triples_missing_from_the_kb(small_setup, tokenizer):
    settings, model, kb, questions = small_setup
    outside = Question(99, "这个问题的答案不在知识库里吗？", make_triple("不存在的实体", "属性", "值"))
    results = evaluate(Answerer(model, tokenizer, kb, settings, beam_size=1),
                       [questions[0], outside], progress=False)
    assert results["questions"] == 2 and results["gold_missing_from_kb"] == 1
    assert results["not_kb_keys"] == 0 and 0 <= results["score"] <= 1


def test_cli_builds_trains_evaluates_and_predicts(tmp_path):
    lines = (KGCLUE_DIR / "train.json").read_text(encoding="utf-8").splitlines()
    train = write(tmp_path / "train.json", "\n".join(lines[:48]) + "\n")
    dev = write(tmp_path / "dev.json", "\n".join(lines[48:56]) + "\n")
    config = write(tmp_path / "config.json", json.dumps(TINY))
    vocab, kb, run = str(CHINESE_BERT_VOCAB), str(tmp_path / "kb"), str(tmp_path / "run")
    assert bert4x_main(["kgclue", "build-kb", str(train), str(dev), "--from-answers",
                        "--vocab", vocab, "--output", kb]) == 0
    assert bert4x_main(["kgclue", "train", "--config", str(config), "--vocab", vocab,
                        "--kb", kb, "--train", str(train), "--dev", str(dev), "--epochs", "1",
                        "--batch-size", "16", "--dev-limit", "4", "--beam-size", "1",
                        "--work-dir", run]) == 0
    assert bert4x_main(["kgclue", "evaluate", "--work-dir", run, "--data", str(dev),
                        "--limit", "4", "--beam-size", "1"]) == 0
    output = tmp_path / "predict.json"
    assert bert4x_main(["kgclue", "predict", "--work-dir", run, "--input", str(dev),
                        "--output", str(output), "--beam-size", "1"]) == 0
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 8 and all(r["answer"].count(" ||| ") == 2 for r in records)
