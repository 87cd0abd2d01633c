"""Tokenizers: ids identical to HF BertTokenizer, exact offsets, vocab simplification, jieba words."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bert4x import build_transformer_model
from bert4x.tokenizers import Tokenizer, WordTokenizer, load_vocab, read_vocab_file, save_vocab
from pretrained import CHINESE_BERT_VOCAB, chinese_texts

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(CHINESE_BERT_VOCAB)


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer):
    transformers = pytest.importorskip("transformers")
    # transformers 5 silently ignores vocab_file=; the keyword is vocab=.
    reference = transformers.BertTokenizer(vocab=dict(tokenizer.token_to_id))
    assert reference.convert_tokens_to_ids("[CLS]") == 101
    return reference


def test_real_chinese_data_ids_and_offsets_match_hf_on_both_paths(tokenizer, hf_tokenizer):
    texts = chinese_texts()
    assert len(texts) == 104_100
    reference = hf_tokenizer(texts, return_offsets_mapping=True)
    fast_ids, _, fast_offsets = tokenizer.encode_batch(texts, return_offsets=True)
    assert fast_ids == reference["input_ids"]
    assert fast_offsets == [list(map(tuple, o)) for o in reference["offset_mapping"]]
    python_path = [tokenizer.encode(text, return_offsets=True) for text in texts]
    assert [ids for ids, _, _ in python_path] == fast_ids
    assert [offsets for _, _, offsets in python_path] == fast_offsets


# Mixed-script text: CJK (incl. an extension-B ideograph), ASCII, full-width forms, accented
# Latin, Greek, Cyrillic, CJK punctuation, emoji (not in the vocab -> [UNK]), every kind of
# whitespace and characters the normaliser removes (NUL, zero-width space, BOM, U+FFFD).
MIXED_ALPHABET = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过"
    "子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体"
    "𠀀abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    "ＡＢＣａｂｃ０１２３！？（），．：；＠"
    "àáâãäåçèéêëìíîïñòóôõöùúûüýÿÀÉÎÕÜßøæœ"
    "αβγδΑΒΓΔλπΣωабвгдАБВГДжЖ"
    "，。！？、；：“”‘’《》【】…—～·①②"
    "😀🎉"
    " \t\n\r\u3000\u00a0\u2028\u2003"
    "\x00\u200b\ufeff\ufffd\x07"
)
mixed_text = st.text(alphabet=MIXED_ALPHABET, max_size=80)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=mixed_text,  # HF reads an empty second text as "no pair": give it a character
       second=st.one_of(st.none(), st.text(alphabet=MIXED_ALPHABET, min_size=1, max_size=80)))
def test_mixed_script_ids_match_hf_and_paths_agree(tokenizer, hf_tokenizer, first, second):
    assume(not any(token in (first + (second or "")) for token in SPECIAL_TOKENS))
    ids, segments, offsets = tokenizer.encode(first, second, return_offsets=True)
    reference = hf_tokenizer(first, second, return_offsets_mapping=True,
                             return_token_type_ids=True)
    assert ids == reference["input_ids"]
    assert segments == reference["token_type_ids"]
    assert offsets == [tuple(o) for o in reference["offset_mapping"]]
    fast = tokenizer.encode_batch([first], None if second is None else [second],
                                  return_offsets=True)
    assert (ids, segments, offsets) == tuple(column[0] for column in fast)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mixed_text)
def test_offsets_map_each_token_back_to_its_characters(tokenizer, text):
    ids, _, offsets = tokenizer.encode(text, return_offsets=True)
    covered = []
    for token, (start, end) in zip(tokenizer.ids_to_tokens(ids[1:-1]), offsets[1:-1]):
        assert 0 <= start < end <= len(text)
        covered.extend(range(start, end))
        if token != "[UNK]":
            stem = token[2:] if token.startswith("##") else token
            assert tokenizer.normalize(text[start:end]) == stem
    # Spans never overlap and come in text order; they cover every character that is neither
    # whitespace nor removed by normalisation, and never whitespace (removed characters such
    # as a zero-width space may sit inside a word's span).
    assert covered == sorted(set(covered))
    meaningful = {i for i, ch in enumerate(text) if tokenizer.normalize(ch).strip()}
    assert meaningful <= set(covered)
    assert all(tokenizer.normalize(text[i]) == "" for i in set(covered) - meaningful)


def test_offsets_on_spaces_full_width_and_unknown_characters(tokenizer):
    text = "我在 ＮＡＳＡ 买了2台iPhone，😀！"
    ids, _, offsets = tokenizer.encode(text, return_offsets=True)
    tokens = tokenizer.ids_to_tokens(ids)
    spans = {token: text[s:e] for token, (s, e) in zip(tokens, offsets)}
    assert spans["ｎ"] == "Ｎ" and spans["##ａ"] == "Ａ"
    assert spans["[UNK]"] == "😀"
    assert tokenizer.rematch(text, tokens)[tokens.index("[UNK]")] == [text.index("😀")]
    assert "".join(text[s:e] for s, e in offsets[1:-1]) == text.replace(" ", "")
    # BERT makes a whole word [UNK] when any part of it is unknown, and the span says so.
    ids, _, offsets = tokenizer.encode("iPhone😀", return_offsets=True)
    assert tokenizer.ids_to_tokens(ids) == ["[CLS]", "[UNK]", "[SEP]"] and offsets[1] == (0, 7)


def test_pair_encoding_segments_and_truncation(tokenizer):
    first, second = "北京是中国的首都", "上海"
    ids, segments = tokenizer.encode(first, second)
    assert tokenizer.ids_to_tokens(ids) == ["[CLS]", *first, "[SEP]", "上", "海", "[SEP]"]
    assert segments == [0] * 10 + [1] * 3
    ids, segments = tokenizer.encode(first, second, maxlen=8)
    assert tokenizer.ids_to_tokens(ids) == ["[CLS]", "北", "京", "是", "[SEP]", "上", "海",
                                            "[SEP]"]
    ids, _ = tokenizer.encode("一二三", "四五六七八", maxlen=7)
    assert tokenizer.ids_to_tokens(ids) == ["[CLS]", "一", "二", "[SEP]", "四", "五", "[SEP]"]
    ids, _ = tokenizer.encode("一二三", "四五六七八", maxlen=7, truncation="only_second")
    assert tokenizer.ids_to_tokens(ids) == ["[CLS]", "一", "二", "三", "[SEP]", "四", "[SEP]"]
    assert tokenizer.tokenize("一二三四五", maxlen=4) == ["[CLS]", "一", "二", "[SEP]"]


def test_decode_joins_chinese_and_spaces_words(tokenizer):
    ids, _ = tokenizer.encode("我用iPhone 12拍了hello world, ok 很好")
    assert tokenizer.decode(ids) == "我用iphone 12拍了hello world, ok很好"
    assert tokenizer.decode(np.array(ids)) == tokenizer.decode(ids)


def test_bad_input_gives_clear_errors(tokenizer, tmp_path):
    with pytest.raises(TypeError, match="must be a str"):
        tokenizer.encode(None)
    with pytest.raises(TypeError, match="single str"):
        tokenizer.encode_batch("一句话")
    with pytest.raises(ValueError, match="first texts but"):
        tokenizer.encode_batch(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="maxlen=2 leaves no room for text: 3 special tokens"):
        tokenizer.encode("a", "b", maxlen=2)
    with pytest.raises(ValueError, match="truncation must be one of"):
        tokenizer.encode("a", "b", maxlen=4, truncation="middle")
    with pytest.raises(ValueError, match="the first text alone is too long"):
        tokenizer.encode("一二三四五", "六", maxlen=5, truncation="only_second")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([101, 999999])
    with pytest.raises(ValueError, match="is not what this tokenizer makes"):
        tokenizer.rematch("你好", ["[CLS]", "你", "坏", "[SEP]"])
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[UNK\]'\]"):
        Tokenizer({"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "a": 3})
    with pytest.raises(ValueError, match="ids must be exactly 0..n-1"):
        Tokenizer({"[PAD]": 0, "[UNK]": 5})
    duplicated = tmp_path / "vocab.txt"
    duplicated.write_text("[PAD]\n[UNK]\na\nb\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.txt:5: token 'a' already on line 3"):
        read_vocab_file(duplicated)
    with pytest.raises(ValueError, match="startswith tokens missing"):
        load_vocab(CHINESE_BERT_VOCAB, simplified=True, startswith=["[PAD]", "<pad>"])


def test_vocab_file_round_trip_keeps_the_line_separator_token(tmp_path):
    token_dict = read_vocab_file(CHINESE_BERT_VOCAB)
    assert len(token_dict) == 21128 and token_dict["\u2028"] == 343
    save_vocab(token_dict, tmp_path / "vocab.txt")
    assert read_vocab_file(tmp_path / "vocab.txt") == token_dict


def test_simplified_vocab_tokenizes_real_text_identically(tokenizer):
    token_dict, keep_tokens = load_vocab(CHINESE_BERT_VOCAB, simplified=True)
    assert list(token_dict)[:5] == list(SPECIAL_TOKENS)
    assert len(token_dict) == len(keep_tokens) < 14_000
    assert "##的" not in token_dict and "[unused1]" not in token_dict and "##ing" in token_dict
    small = Tokenizer(token_dict)
    texts = chinese_texts()[::7]
    full_ids, _ = tokenizer.encode_batch(texts)
    small_ids, _ = small.encode_batch(texts)
    keep = np.asarray(keep_tokens)
    assert all(list(keep[s]) == f for s, f in zip(small_ids, full_ids))


def test_model_with_simplified_vocab_equals_full_model_on_real_text(tokenizer, tmp_path):
    config = dict(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    full = build_transformer_model(config, model="bert", with_mlm="linear",
                                   return_keras_model=False)
    rng = np.random.default_rng(0)
    for variable in full.model.weights:
        variable.assign(rng.normal(0, 0.2, variable.shape).astype("float32"))
    full.export_huggingface(tmp_path)
    token_dict, keep_tokens = load_vocab(CHINESE_BERT_VOCAB, simplified=True)
    small = build_transformer_model(config, tmp_path, model="bert", with_mlm="linear",
                                    keep_tokens=keep_tokens)
    text = "你知道龙晶用繁体字怎么写吗？answer: 龍晶 (game)"
    full_ids, segments = tokenizer.encode(text)
    small_ids, _ = Tokenizer(token_dict).encode(text)
    full_logits = full.model.predict([np.array([full_ids]), np.array([segments])], verbose=0)
    small_logits = small.predict([np.array([small_ids]), np.array([segments])], verbose=0)
    np.testing.assert_allclose(small_logits, full_logits[..., keep_tokens], atol=1e-5)


@pytest.fixture(scope="module")
def word_vocab():
    words = ["我", "来到", "北京", "清", "华", "大", "学", "他", "去", "了", "##s", "apple"]
    return {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(words))}


def test_word_tokenizer_keeps_vocab_words_and_falls_back_to_characters(word_vocab):
    tokenizer = WordTokenizer(word_vocab)
    # jieba's own example: 我/来到/北京/清华大学 (HMM off); 清华大学 is not in this vocabulary.
    assert tokenizer.tokenize("我来到北京清华大学") == [
        "[CLS]", "我", "来到", "北京", "清", "华", "大", "学", "[SEP]"]
    text = "他去了 Apples 北京"
    ids, _, offsets = tokenizer.encode(text, return_offsets=True)
    assert tokenizer.ids_to_tokens(ids) == [
        "[CLS]", "他", "去", "了", "apple", "##s", "北京", "[SEP]"]
    assert [text[s:e] for s, e in offsets[1:-1]] == ["他", "去", "了", "Apple", "s", "北京"]
    assert tokenizer.encode_batch([text])[0] == [ids]


def test_word_tokenizer_on_the_chinese_vocab_matches_characters_for_out_of_vocab_words(tokenizer):
    words = WordTokenizer(CHINESE_BERT_VOCAB)
    text = "武汉交通职业学院计算机协会有哪些学校？"
    assert words.encode(text) == tokenizer.encode(text)
