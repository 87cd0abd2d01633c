"""SpTokenizer against HF transformers' T5 tokenizer, on a SentencePiece model trained here
from the shipped real texts (no download), over all 104,100 of them."""

import io
import unicodedata

import pytest

from bert4x.tokenizers import SpTokenizer
from pretrained import chinese_texts

sentencepiece = pytest.importorskip("sentencepiece")


@pytest.fixture(scope="module")
def texts():
    return chinese_texts()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, texts):
    """A unigram model with T5's special ids (pad 0, </s> 1, unk 2), saved as spiece.model."""
    directory = tmp_path_factory.mktemp("spm")
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts[::5]), model_writer=model, vocab_size=5000,
        model_type="unigram", character_coverage=0.995, pad_id=0, eos_id=1, unk_id=2,
        bos_id=-1, minloglevel=2)
    (directory / "spiece.model").write_bytes(model.getvalue())
    return directory


def test_ids_equal_hf_t5_tokenizer_on_every_shipped_text(model_dir, texts):
    """Equal ids, except where two segmentations score exactly the same under the unigram
    model ("I"+"II" against "II"+"I"): sentencepiece and HF's tokenizers break such ties
    differently. Seen: 6 of the 104,100 texts, every one an exact tie."""
    import transformers

    reference = transformers.T5Tokenizer.from_pretrained(model_dir, extra_ids=0)
    ours = SpTokenizer(model_dir / "spiece.model")
    expected = reference(texts)["input_ids"]
    got, segments = ours.encode_batch(texts)
    assert all(set(row) == {0} for row in segments)
    differing = [row for row, (a, b) in enumerate(zip(got, expected)) if a != b]
    assert len(differing) <= len(texts) // 1000, len(differing)
    score = lambda ids: sum(ours.processor.get_score(i) for i in ids)  # noqa: E731
    for row in differing:
        assert ours.decode(got[row]) == reference.decode(expected[row], skip_special_tokens=True)
        assert score(got[row]) == pytest.approx(score(expected[row]), abs=1e-5), texts[row]
    # Pairs: first </s> second </s>, the second text in segment 1.
    pairs = reference(texts[:500], texts[500:1000])["input_ids"]
    assert [ours.encode(a, b)[0] for a, b in zip(texts[:500], texts[500:1000])] == pairs


def test_markers_truncation_and_decoding(model_dir, texts):
    tokenizer = SpTokenizer(model_dir / "spiece.model")
    text = texts[0]
    ids, _ = tokenizer.encode(text, maxlen=6)
    assert len(ids) == 6 and ids[-1] == tokenizer.end_id == 1
    ids, segments = tokenizer.encode(text, texts[1], maxlen=12)
    assert len(ids) == 12 and ids.count(1) == 2 and segments[-1] == 1
    # Markers and padding are left out; the text comes back NFKC-normalised, as the model's
    # normaliser (SentencePiece's default, T5's) saw it.
    assert tokenizer.decode(tokenizer.encode(text)[0] + [0, 0]) == \
        unicodedata.normalize("NFKC", text)
    assert tokenizer.tokenize(text)[-1] == "</s>"
    # bert4keras' argument names; ALBERT-style markers must be pieces of the model.
    assert SpTokenizer(model_dir / "spiece.model", token_end=None).encode(text)[0][-1] != 1
    with pytest.raises(ValueError, match="no piece '\\[CLS\\]'"):
        SpTokenizer(model_dir / "spiece.model", start="[CLS]")
    with pytest.raises(ValueError, match="maxlen=2 leaves no room for text"):
        tokenizer.encode(text, texts[1], maxlen=2)
    with pytest.raises(TypeError, match="text must be a str"):
        tokenizer.encode(None)
    with pytest.raises(FileNotFoundError, match="SentencePiece model not found"):
        SpTokenizer(model_dir / "missing.model")
