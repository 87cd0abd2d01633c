#! -*- coding: utf-8 -*-
# Named-entity recognition with GlobalPointer on the People's Daily corpus, written by us in
# bert4keras' API (the GlobalPointer NER scripts of bojone/GlobalPointer carry no licence, so
# this is not a port of them); see examples/README.md.
#
# GlobalPointer (Su 2021) scores every (start, end) token pair per entity type; the loss is the
# multilabel categorical cross-entropy over the n x n scores of each type.

import numpy as np
from bert4x.backend import keras, K
from bert4x.backend import multilabel_categorical_crossentropy
from bert4x.layers import GlobalPointer
from bert4x.models import build_transformer_model
from bert4x.tokenizers import Tokenizer
from bert4x.optimizers import Adam
from bert4x.snippets import sequence_padding, DataGenerator
from bert4x.snippets import open, to_array
from keras.models import Model
from tqdm import tqdm
from settings import budget, checkpoint_path, config_path, data_path, dict_path

maxlen = 256
epochs = budget(10, 1)
batch_size = 16
learning_rate = budget(2e-5, 1e-3)


def read_corpus(filename):
    """Sentences of ``char tag`` lines (B-X / I-X / O), a blank line between sentences, as
    ``[text, (start, end, type), ...]`` with inclusive character offsets."""
    sentences = []
    with open(filename, encoding='utf-8') as f:
        for block in f.read().split('\n\n'):
            if not block.strip():
                continue
            sentence = ['']
            for offset, line in enumerate(block.split('\n')):
                char, tag = line.split(' ')
                sentence[0] += char
                if tag.startswith('B-'):
                    sentence.append([offset, offset, tag[2:]])
                elif tag.startswith('I-'):
                    sentence[-1][1] = offset
            sentences.append([sentence[0]] + [tuple(e) for e in sentence[1:]])
    return sentences


train_data = read_corpus(data_path('china-people-daily-ner-corpus/example.train'))
valid_data = read_corpus(data_path('china-people-daily-ner-corpus/example.dev'))
train_data, valid_data = train_data[:budget(None, 64)], valid_data[:budget(None, 16)]
categories = sorted({entity[2] for sentence in train_data for entity in sentence[1:]})
tokenizer = Tokenizer(dict_path, do_lower_case=True)


class data_generator(DataGenerator):
    """Token ids, and per type an n x n 0/1 matrix of the entities' (start, end) tokens."""

    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, sentence in self.sample(random):
            tokens = tokenizer.tokenize(sentence[0], maxlen=maxlen)
            mapping = tokenizer.rematch(sentence[0], tokens)
            starts = {m[0]: i for i, m in enumerate(mapping) if m}
            ends = {m[-1]: i for i, m in enumerate(mapping) if m}
            token_ids = tokenizer.tokens_to_ids(tokens)
            labels = np.zeros((len(categories), len(token_ids), len(token_ids)))
            for start, end, label in sentence[1:]:
                if start in starts and end in ends:
                    labels[categories.index(label), starts[start], ends[end]] = 1
            batch_token_ids.append(token_ids)
            batch_segment_ids.append([0] * len(token_ids))
            batch_labels.append(labels[:, :len(token_ids), :len(token_ids)])
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                batch_labels = sequence_padding(batch_labels, seq_dims=3)
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


def global_pointer_crossentropy(y_true, y_pred):
    """Multilabel cross-entropy over each type's flattened n x n scores, summed over types
    and averaged over the batch (padding pairs were masked by the layer)."""
    batch_types = K.shape(y_pred)[0] * K.shape(y_pred)[1]
    y_true = K.reshape(y_true, (batch_types, -1))
    y_pred = K.reshape(y_pred, (batch_types, -1))
    return K.mean(multilabel_categorical_crossentropy(y_true, y_pred))


def global_pointer_f1(y_true, y_pred):
    """Span F1 of the batch, counting a span as predicted when its score is above 0."""
    y_pred = K.cast(K.greater(y_pred, 0), K.floatx())
    return 2 * K.sum(y_true * y_pred) / K.sum(y_true + y_pred)


model = build_transformer_model(config_path, checkpoint_path, model='roformer')
output = GlobalPointer(len(categories), 64)(model.output)  # the padding mask comes along

model = Model(model.input, output)
model.summary()
model.compile(loss=global_pointer_crossentropy, optimizer=Adam(learning_rate),
              metrics=[global_pointer_f1])


class NamedEntityRecognizer(object):
    """Entities of a text: every (start, end, type) whose score is above the threshold."""

    def recognize(self, text, threshold=0):
        tokens = tokenizer.tokenize(text, maxlen=512)
        mapping = tokenizer.rematch(text, tokens)
        token_ids = tokenizer.tokens_to_ids(tokens)
        token_ids, segment_ids = to_array([token_ids], [[0] * len(token_ids)])
        scores = model.predict([token_ids, segment_ids], verbose=0)[0]
        scores[:, [0, -1]] -= np.inf  # [CLS] and [SEP] start no entity
        scores[:, :, [0, -1]] -= np.inf
        return [(mapping[start][0], mapping[end][-1], categories[label])
                for label, start, end in zip(*np.where(scores > threshold))]


NER = NamedEntityRecognizer()


def evaluate(data):
    right, predicted, gold = 1e-10, 1e-10, 1e-10
    for sentence in tqdm(data, ncols=100):
        found = set(NER.recognize(sentence[0]))
        truth = set(sentence[1:])
        right, predicted, gold = right + len(found & truth), predicted + len(found), \
            gold + len(truth)
    return 2 * right / (predicted + gold), right / predicted, right / gold


class Evaluator(keras.callbacks.Callback):
    def __init__(self):
        self.best_val_f1 = 0

    def on_epoch_end(self, epoch, logs=None):
        f1, precision, recall = evaluate(valid_data)
        if f1 >= self.best_val_f1:
            self.best_val_f1 = f1
            model.save_weights('./best_model_peopledaily_globalpointer.weights.h5')
        print('valid:  f1: %.5f, precision: %.5f, recall: %.5f, best f1: %.5f\n' %
              (f1, precision, recall, self.best_val_f1))


if __name__ == '__main__':

    evaluator = Evaluator()
    train_generator = data_generator(train_data, batch_size)
    model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=epochs,
              callbacks=[evaluator])

else:

    model.load_weights('./best_model_peopledaily_globalpointer.weights.h5')
