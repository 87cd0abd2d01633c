"""``build_transformer_model(..., precision=)``: bfloat16 and int8 models agree with float32 on
the same checkpoint, really compute in their precision, and leave the global policy alone."""

import keras
import numpy as np
import pytest

from bert4x import build_transformer_model
from bert4x.models import MODELS

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


def least_cosine(actual, expected):
    actual = keras.ops.convert_to_numpy(keras.ops.cast(actual, "float32"))
    actual, expected = (x.reshape(-1, x.shape[-1]) for x in (actual, expected))
    return (np.sum(actual * expected, axis=1) / np.linalg.norm(actual, axis=1)
            / np.linalg.norm(expected, axis=1)).min()


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
            assert all(layer.compute_dtype == "bfloat16" for layer in dense)
            assert all(layer.kernel.dtype == "float32" for layer in dense)
        else:
            tables = [layer for layer in model._flatten_layers()
                      if isinstance(layer, keras.layers.ReversibleEmbedding)]
            assert tables and all(layer.quantization_mode == "int8" for layer in dense + tables)
            assert all(keras.backend.standardize_dtype(layer._kernel.dtype) == "int8"
                       for layer in dense)
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
