"""Fuzzing the readers and the tokenizer: random bytes, random Unicode, mixed line endings and
byte-order marks. Every outcome is a result or a clear error naming the file (a reader's
``file:line: reason``), never another exception."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert4x.tokenizers import Tokenizer
from bert4x.training import DataError, read_text_lines
from pretrained import CHINESE_BERT_VOCAB
from tasks.cosent.data import read_nli_triples, read_pairs
from tasks.kgclue.data import read_questions
from tasks.triple_extraction import SAMPLE_SCHEMA
from tasks.triple_extraction.data import read_duie, read_schema

SCHEMA = read_schema(SAMPLE_SCHEMA)
PIECES = [b"\t", b"\n", b"\r\n", b"\r", b"\xef\xbb\xbf", b"\xff", b"\xe4\xb8", b"{", b"}", b'"',
          b'{"text": "', b'", "spo_list": [', b'{"subject": "a", "predicate": "', "作者".encode(),
          b'", "object": "b"}]}', b'{"id": 1, "question": "', b'", "answer": "a ||| b ||| c"}',
          b'"sentence1": "', b'"label": ', b"nan", b"1e999", b"-1", b"0.5", b"3", b"null",
          "一个\t两个\t".encode(), b"\x00", b"\\u0000", b"\\ud800"]
CONTENT = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=12),
                             st.text(max_size=12).map(str.encode)),
                   max_size=40).map(b"".join)
READERS = {
    "pairs.tsv": read_pairs,
    "pairs.jsonl": read_pairs,
    "nli.tsv": read_nli_triples,
    "duie.jsonl": lambda path: read_duie(path, SCHEMA),
    "schema.jsonl": read_schema,
    "questions.jsonl": read_questions,
    "texts.txt": read_text_lines,
}
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("name", sorted(READERS))
@FUZZ
@given(content=CONTENT)
def test_every_reader_gives_a_result_or_an_error_naming_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    try:
        READERS[name](path)
    except DataError as error:
        assert str(error).startswith(f"{path}:"), error
    except ValueError as error:  # a file-level refusal (a schema listing a predicate twice)
        assert str(path) in str(error), error


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(CHINESE_BERT_VOCAB)


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40) | st.text(
    st.sampled_from("一个 \t\n\r\ufeff\u3000\u00e9A1,。！\u0301\u200b\u2028\U0001f600"), max_size=40)


@FUZZ
@given(text=TEXT, second=st.none() | TEXT, maxlen=st.none() | st.integers(5, 30))
def test_the_tokenizer_gives_the_same_valid_ids_on_both_paths(tokenizer, text, second, maxlen):
    """The Python path and the HF ``tokenizers`` batch path agree on any text; ids are in the
    vocabulary, offsets inside the text, and ``maxlen`` is kept."""
    ids, segments, offsets = tokenizer.encode(text, second, maxlen=maxlen, return_offsets=True)
    batch = tokenizer.encode_batch([text], None if second is None else [second], maxlen=maxlen,
                                   return_offsets=True)
    assert (ids, segments, offsets) == tuple(column[0] for column in batch)
    assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert maxlen is None or len(ids) <= maxlen
    for (start, end), segment in zip(offsets, segments):
        assert 0 <= start <= end <= len(text if segment == 0 else second)
    assert isinstance(tokenizer.decode(ids), str)


@FUZZ
@given(content=CONTENT)
def test_vocabularies_from_random_bytes_load_or_say_why(tmp_path, content):
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    try:
        Tokenizer(str(path))
    except ValueError as error:
        assert str(path) in str(error) or "vocab" in str(error).lower(), error


def test_the_fuzz_strategies_make_the_inputs_they_claim(tmp_path):
    """The pieces above include a well-formed record of each reader, so the fuzz reaches past
    the first check (a guard against a strategy that only ever makes garbage)."""
    path = tmp_path / "duie.jsonl"
    path.write_bytes(b'{"text": "ab", "spo_list": [{"subject": "a", "predicate": "'
                     + "作者".encode() + b'", "object": "b"}]}\n')
    assert len(read_duie(path, SCHEMA)) == 1
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps({"id": 1, "question": "q", "answer": "a ||| b ||| c"}) + "\n")
    assert len(read_questions(path)) == 1
