"""Finished task runs without the training: the settings file and weights each task writes, on
tiny models with random weights. Export and serving need a run's layout, not a good model."""

import json

import keras

from bert4x.tokenizers import Tokenizer
from pretrained import CHINESE_BERT_VOCAB, KGCLUE_DIR
from tasks.triple_extraction import SAMPLE_SCHEMA

TINY = dict(vocab_size=21128, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=96)


def _config(directory):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def cosent_run(directory, seed=0):
    from tasks.cosent.task import ENCODER_WEIGHTS, Settings, build_sentence_encoder

    settings = Settings(config=_config(directory), vocab=str(CHINESE_BERT_VOCAB), maxlen=32)
    settings.save(directory)
    keras.utils.set_random_seed(seed)
    build_sentence_encoder(settings).encoder.save_weights(directory / ENCODER_WEIGHTS)
    return directory


def triples_run(directory, kind="gplinker", seed=0):
    from tasks.triple_extraction.task import MODEL_WEIGHTS, Extractor, Settings

    settings = Settings(config=_config(directory), vocab=str(CHINESE_BERT_VOCAB),
                        schema=str(SAMPLE_SCHEMA), kind=kind, maxlen=64, head_size=8)
    settings.save(directory)
    keras.utils.set_random_seed(seed)
    Extractor(settings).model.train_model.save_weights(directory / MODEL_WEIGHTS)
    return directory


def kgclue_run(directory, questions=200, seed=0):
    """A UniLM run whose KB holds the answers of the first ``questions`` training questions."""
    from tasks.kgclue.data import answer_triples, read_questions
    from tasks.kgclue.kb import KnowledgeBase
    from tasks.kgclue.task import MODEL_WEIGHTS, Settings, build_seq2seq

    tokenizer = Tokenizer(CHINESE_BERT_VOCAB)
    config = _config(directory)
    answered = read_questions(KGCLUE_DIR / "train.json").examples[:questions]
    KnowledgeBase.build(answer_triples(answered), tokenizer).save(directory / "kb")
    settings = Settings(config=config, vocab=str(CHINESE_BERT_VOCAB), kb=str(directory / "kb"),
                        question_maxlen=32, key_maxlen=48)
    settings.save(directory)
    keras.utils.set_random_seed(seed)
    build_seq2seq(settings, tokenizer).save_weights(directory / MODEL_WEIGHTS)
    return directory
