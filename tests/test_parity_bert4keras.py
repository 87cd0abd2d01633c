"""Families HF transformers no longer has, against bert4keras 0.11.5 itself: bert4keras builds
the model, randomises every trainable weight, writes its checkpoint under the release's names
and runs a padded batch; bert4x loads that checkpoint and must give the same outputs."""

import numpy as np
import pytest

from bert4x import build_transformer_model
from tests.references import bert4keras_available, random_batch, run_bert4keras

pytestmark = pytest.mark.skipif(not bert4keras_available(),
                                reason="bert4keras 0.11.5 and tf-keras are not installed")

TOLERANCE = 1e-4

REFERENCE = """
import json
import numpy as np
from bert4keras.backend import K
from bert4keras.models import build_transformer_model
with open(data['directory'] + '/config.json', 'w') as handle:
    json.dump(data['config'], handle)
built = build_transformer_model(data['directory'] + '/config.json', model=data['model'],
                                return_keras_model=False, **data['options'])
rng = np.random.default_rng(data['seed'])
for weight in built.model.trainable_weights:
    value = rng.normal(0, 0.2, K.int_shape(weight)) + (1 if 'gamma' in weight.name else 0)
    K.set_value(weight, value.astype('float32'))
# bert4keras' own save_weights_as_checkpoint needs TF1 sessions; its name mapping is what
# it would write, so write that with the reference writer.
from tests.references import write_google_checkpoint
layers = {layer.name: layer for layer in built.model.layers}
arrays = {name: K.get_value(weight)
          for layer, names in built.variable_mapping().items() if layer in layers
          for name, weight in zip(names, layers[layer].trainable_weights)}
# As bert4keras' T5_Base.create_variable does on save: TF files hold T5's bias [heads, buckets].
arrays = {name: value.T if 'relative_attention_bias' in name else value
          for name, value in arrays.items()}
write_google_checkpoint(data['directory'] + '/model.ckpt', arrays, extra_slots=False)
inputs = [np.array(x) for x in data['inputs']]
result = built.model.predict(inputs).tolist()
"""


def bert4keras_outputs(tmp_path, model, config, options, seed, segments=True,
                       lengths=(80, 9, 1, 70), inputs=None):
    """bert4keras' outputs on ``inputs``, by default a padded batch of token ids and (with
    ``segments``) segment ids; returns the batch our model takes, and the outputs."""
    if inputs is None:
        token_ids, segment_ids = random_batch(config["vocab_size"], lengths, seed=seed)
        inputs = [token_ids, segment_ids] if segments else [token_ids]
        batch = (token_ids, segment_ids)
    else:
        batch = tuple(inputs)
    outputs = run_bert4keras(REFERENCE, dict(
        directory=str(tmp_path), model=model, config=config, options=options, seed=seed,
        inputs=[x.tolist() for x in inputs]))
    return batch, np.asarray(outputs, dtype="float32")


@pytest.mark.parametrize("options, ours", [({}, {}), ({"with_mlm": True}, {"with_mlm": True})],
                         ids=["encoder", "mlm"])
def test_nezha_equals_bert4keras(options, ours, tmp_path):
    # Rows of 80 and 70 tokens, so distances past the clipping at 64 (bert4keras fixes 64, as
    # the releases do) are exercised.
    config = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64, hidden_act="gelu",
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batch, expected = bert4keras_outputs(tmp_path, "nezha", config, options, seed=21)
    built = build_transformer_model(tmp_path / "config.json", tmp_path / "model.ckpt",
                                    model="nezha", return_keras_model=False, **ours)
    assert not built.load_report.missing and not built.load_report.unused
    keep = batch[0] != 0
    np.testing.assert_allclose(built.model.predict(list(batch), verbose=0)[keep], expected[keep],
                               atol=TOLERANCE, rtol=0)


GPT_CONFIG = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64, hidden_act="gelu",
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.mark.parametrize("model, segments", [("gpt", True), ("gpt2", False),
                                             ("gpt2_ml", False)])
def test_gpt_family_equals_bert4keras(model, segments, tmp_path):
    """bert4keras' GPT (CDial-GPT's format), GPT-2 and GPT2-ML: causal, tied output, their own
    checkpoint names; bert4keras' GPT-2 and GPT2-ML take token ids only."""
    # GPT-2's and GPT2-ML's norms use 1e-5 (bert4keras fixes it; our default for both).
    config = GPT_CONFIG if segments else dict(GPT_CONFIG, type_vocab_size=0)
    batch, expected = bert4keras_outputs(tmp_path, model, config, {}, seed=22,
                                         segments=segments, lengths=(40, 9, 1, 30))
    built = build_transformer_model(tmp_path / "config.json", tmp_path / "model.ckpt",
                                    model=model, return_keras_model=False)
    assert built.load_report.fmt == "google"
    assert not built.load_report.missing and not built.load_report.unused
    keep = batch[0] != 0
    probabilities = built.model.predict(list(batch), verbose=0)
    np.testing.assert_allclose(np.log(probabilities[keep]), np.log(expected[keep]),
                               atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("model", ["t5.1.1", "mt5.1.1"])
def test_t5_in_bert4keras_format_equals_bert4keras(model, tmp_path):
    """bert4keras' T5 (the format of T5-PEGASUS): its config form (a gated ``hidden_act``
    list, ``attention_head_size``), the releases' TF names (mT5's say rms_norm), the relative
    bias stored [heads, buckets], and bert4keras' output scale."""
    config = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  attention_head_size=8, intermediate_size=37, hidden_act=["gelu", "linear"],
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    sources, _ = random_batch(60, [40, 9, 1, 30], seed=23)
    targets, _ = random_batch(60, [12, 4, 1, 7], seed=24)  # bert4keras starts from a token
    batch, expected = bert4keras_outputs(tmp_path, model, config, {}, seed=23,
                                         inputs=[sources, targets])
    built = build_transformer_model(tmp_path / "config.json", tmp_path / "model.ckpt",
                                    model=model, return_keras_model=False)
    assert not built.load_report.missing and not built.load_report.unused
    keep = targets != 0
    probabilities = built.model.predict(list(batch), verbose=0)
    np.testing.assert_allclose(np.log(probabilities[keep]), np.log(expected[keep]),
                               atol=TOLERANCE, rtol=0)
