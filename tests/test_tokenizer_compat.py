"""The Tokenizer under bert4keras' names: encode with maxlen / truncate_from, its attribute
names and load_vocab give what bert4keras 0.11.5 gives on the shipped real texts."""

import numpy as np
import pytest

from bert4x.tokenizers import Tokenizer, load_vocab
from pretrained import CHINESE_BERT_VOCAB, STSB_ZH_DIR
from tasks.cosent.data import read_pairs
from tests.references import bert4keras_available, run_bert4keras

pytestmark = pytest.mark.skipif(not bert4keras_available(),
                                reason="bert4keras 0.11.5 + tf-keras not installed")


def test_encode_equals_bert4keras_with_truncation_from_either_side():
    pairs = read_pairs(STSB_ZH_DIR / "valid.data").examples[:300]
    rng = np.random.default_rng(0)
    cases = [dict(first=p.first, second=p.second if rng.random() < 0.6 else None,
                  maxlen=None if rng.random() < 0.2 else int(rng.integers(5, 40)),
                  truncate_from=str(rng.choice(["right", "left"]))) for p in pairs]
    expected = run_bert4keras(
        "from bert4keras.tokenizers import Tokenizer, load_vocab\n"
        "tokenizer = Tokenizer(data['vocab'], do_lower_case=True)\n"
        "names = ['_token_start_id', '_token_end_id', '_token_pad_id', '_token_unk_id', "
        "'_token_mask_id', '_vocab_size']\n"
        "token_dict, keep = load_vocab(data['vocab'], simplified=True, "
        "startswith=['[PAD]', '[UNK]', '[CLS]', '[SEP]'])\n"
        "result = dict(encoded=[tokenizer.encode(c['first'], c['second'], maxlen=c['maxlen'], "
        "truncate_from=c['truncate_from']) for c in data['cases']], "
        "names=[getattr(tokenizer, n) for n in names], keep=keep)",
        dict(vocab=str(CHINESE_BERT_VOCAB), cases=cases))
    tokenizer = Tokenizer(CHINESE_BERT_VOCAB)
    for case, (ids, segments) in zip(cases, expected["encoded"]):
        ours = tokenizer.encode(case["first"], case["second"], maxlen=case["maxlen"],
                                truncate_from=case["truncate_from"])
        assert ours == (ids, segments), case
    assert [tokenizer._token_start_id, tokenizer._token_end_id, tokenizer._token_pad_id,
            tokenizer._token_unk_id, tokenizer._token_mask_id,
            tokenizer._vocab_size] == expected["names"]
    _, keep = load_vocab(dict_path=CHINESE_BERT_VOCAB, simplified=True,
                         startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    assert keep == expected["keep"]


def test_layouts_and_sides_bert4x_lacks_are_refused_by_name():
    tokenizer = Tokenizer(CHINESE_BERT_VOCAB)
    with pytest.raises(ValueError, match="pattern='S\\*ES\\*E' is not supported"):
        tokenizer.encode("一", "二", pattern="S*ES*E")
    with pytest.raises(ValueError, match="truncate_from must be 'right' or 'left', got 3"):
        tokenizer.encode("一二三四", maxlen=3, truncate_from=3)
    assert tokenizer.encode("一二三四", maxlen=4, truncate_from="left")[0][1:-1] == \
        tokenizer.tokens_to_ids(["三", "四"])
