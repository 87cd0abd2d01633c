"""Reference models and checkpoint writers the tests compare bert4x against.

- HF transformers (PyTorch, CPU) models with random weights, saved by ``save_pretrained``;
- Google-format TF checkpoints written the way the original BERT code wrote them
  (``tf.compat.v1.train.Saver`` over variables named ``bert/encoder/layer_0/...``), with names
  derived from HF names by HF's own conversion rules, independently of bert4x's name table.
"""

import os
import re

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def least_cosine(actual, expected):
    """The least cosine between matching vectors of two outputs ([..., features]; ``actual`` a
    backend tensor of any float dtype or an array), over every position."""
    import keras

    actual = keras.ops.convert_to_numpy(keras.ops.cast(actual, "float32"))
    actual, expected = (x.reshape(-1, x.shape[-1]) for x in (actual, expected))
    return (np.sum(actual * expected, axis=1) / np.linalg.norm(actual, axis=1)
            / np.linalg.norm(expected, axis=1)).min()


def random_batch(vocab_size, lengths, seed=0, type_vocab_size=2):
    """Token ids with real padding (0) after each row's length, and random segment ids."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    token_ids = np.zeros((len(lengths), width), dtype="int32")
    segment_ids = np.zeros((len(lengths), width), dtype="int32")
    for row, length in enumerate(lengths):
        token_ids[row, :length] = rng.integers(1, vocab_size, size=length)
        split = rng.integers(1, length + 1)
        segment_ids[row, split:length] = 1 if type_vocab_size > 1 else 0
    return token_ids, segment_ids


def hf_model(family, head, seed=0, **config):
    """A transformers model of ``family`` ("bert"/"roformer"/"albert"/"electra") with every
    parameter random.

    ``head`` is "model" (BertModel...), "mlm" (...ForMaskedLM) or, for ELECTRA,
    "discriminator" (ElectraForPreTraining).  LayerNorm weights are randomised too, so a loader
    that mixes up gamma and beta cannot pass.
    """
    import torch
    import transformers

    classes = {
        ("bert", "model"): (transformers.BertConfig, transformers.BertModel),
        ("bert", "mlm"): (transformers.BertConfig, transformers.BertForMaskedLM),
        ("roformer", "model"): (transformers.RoFormerConfig, transformers.RoFormerModel),
        ("roformer", "mlm"): (transformers.RoFormerConfig, transformers.RoFormerForMaskedLM),
        ("albert", "model"): (transformers.AlbertConfig, transformers.AlbertModel),
        ("albert", "mlm"): (transformers.AlbertConfig, transformers.AlbertForMaskedLM),
        ("electra", "model"): (transformers.ElectraConfig, transformers.ElectraModel),
        ("electra", "mlm"): (transformers.ElectraConfig, transformers.ElectraForMaskedLM),
        ("electra", "discriminator"): (transformers.ElectraConfig,
                                       transformers.ElectraForPreTraining),
    }
    config_class, model_class = classes[family, head]
    torch.manual_seed(seed)
    model = model_class(config_class(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                     **config))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "embed_positions" in name:  # RoFormer's fixed sinusoid table, not a weight
                continue
            parameter.normal_(0.0, 0.2)
            if "LayerNorm.weight" in name:
                parameter.add_(1.0)
    return model.eval()


def hf_gpt2(seed=0, **config):
    """An HF ``GPT2LMHeadModel`` (GPT-2 config names), every parameter random, no dropout,
    and generation left to run its full length (no end token; id 0 is padding)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
        pad_token_id=0, **config))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(0.0, 0.2)
            if ".ln_" in name and name.endswith("weight"):
                parameter.add_(1.0)
    return model.eval()


def hf_t5(family="t5", seed=0, **config):
    """An HF ``T5ForConditionalGeneration`` (or ``MT5...`` for family "mt5"), T5 config names,
    every parameter random, no dropout, and generation that starts from id 0 and runs its full
    length."""
    import torch
    import transformers

    config_class, model_class = {
        "t5": (transformers.T5Config, transformers.T5ForConditionalGeneration),
        "mt5": (transformers.MT5Config, transformers.MT5ForConditionalGeneration)}[family]
    torch.manual_seed(seed)
    model = model_class(config_class(dropout_rate=0.0, eos_token_id=None,
                                     decoder_start_token_id=0, **config))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(0.0, 0.2)
            if "layer_norm" in name:
                parameter.add_(1.0)
    return model.eval()


def hf_outputs(model, token_ids, segment_ids):
    """Run an HF model on a padded batch; returns a dict of numpy arrays."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(token_ids, dtype=torch.long),
                    token_type_ids=torch.tensor(segment_ids, dtype=torch.long),
                    attention_mask=torch.tensor(token_ids != 0, dtype=torch.long))
    return {key: value.numpy() for key, value in out.items() if hasattr(value, "numpy")}


#: ALBERT's and ELECTRA's release names, from transformers' TF-to-PyTorch conversion rules
#: for those families (``load_tf_weights_in_albert``/``_electra``), read in reverse.
_RELEASE_RENAMES = [
    (r"^albert\.encoder\.albert_layer_groups\.0\.albert_layers\.0\.",
     "bert.encoder.transformer.group_0.inner_group_0."),
    (r"\.attention\.(query|key|value)\.", r".attention_1.self.\1."),
    (r"\.attention\.dense\.", ".attention_1.output.dense."),
    (r"\.attention\.LayerNorm\.", ".LayerNorm."),
    (r"\.ffn_output\.", ".ffn_1.intermediate.output.dense."),
    (r"\.ffn\.", ".ffn_1.intermediate.dense."),
    (r"\.full_layer_layer_norm\.", ".LayerNorm_1."),
    (r"^albert\.pooler\.", "bert.pooler.dense."),
    (r"^albert\.", "bert."),
    (r"^predictions\.bias$", "cls.predictions.bias"),
    (r"^predictions\.", "cls.predictions.transform."),
    (r"^generator_lm_head\.bias$", "generator_predictions.output_bias"),
    (r"\.dense_prediction\.", ".dense_1."),
]


def google_name(hf_name):
    """HF name -> Google TF name, following transformers' TF-to-PyTorch conversion in reverse."""
    name = hf_name
    for pattern, replacement in _RELEASE_RENAMES:
        name = re.sub(pattern, replacement, name)
    name = re.sub(r"^(bert|roformer)\.", "bert.", name)
    name = name.replace("bert.embeddings_project", "bert.encoder.embedding_hidden_mapping_in")
    name = re.sub(r"\.layer\.(\d+)\.", r".layer_\1.", name)
    if name == "cls.predictions.bias":
        return "cls/predictions/output_bias"
    if name.endswith("_embeddings.weight"):
        name = name[: -len(".weight")]
    elif "LayerNorm" in name:
        name = name.replace(".weight", ".gamma").replace(".bias", ".beta")
    else:
        name = name.replace(".weight", ".kernel")
    return name.replace(".", "/")


def hf_state_as_google(model):
    """Numpy weights of an HF model under Google names (Linear weights transposed)."""
    arrays = {}
    for hf_name, tensor in model.state_dict().items():
        if ("embed_positions" in hf_name or "position_ids" in hf_name or ".decoder." in hf_name
                or hf_name == "generator_lm_head.weight"):  # tied to the token embedding
            continue
        value = tensor.numpy()
        name = google_name(hf_name)
        arrays[name] = value.T if name.endswith("/kernel") else value
    return arrays


def write_google_checkpoint(prefix, arrays, extra_slots=True):
    """Write ``arrays`` as a TF1 checkpoint with exactly these variable names, as Google's BERT
    release did; ``extra_slots`` adds the Adam slots and global_step real releases carry."""
    import tensorflow as tf

    with tf.Graph().as_default():
        variables = {name: tf.compat.v1.Variable(value, name=name.replace("/", "_"))
                     for name, value in arrays.items()}
        if extra_slots:
            for name, value in list(arrays.items())[:2]:
                variables[name + "/adam_m"] = tf.compat.v1.Variable(np.zeros_like(value))
            variables["global_step"] = tf.compat.v1.Variable(np.int64(1000))
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix)
    return prefix


#: bert4keras 0.11.5 runs beside TF 2.21 only on tf-keras (``.ci/run`` installs both with
#: ``--no-deps``); it cannot be imported next to Keras 3, so it runs in a subprocess.
BERT4KERAS_ENV = dict(os.environ, TF_KERAS="1", TF_USE_LEGACY_KERAS="1",
                      TF_CPP_MIN_LOG_LEVEL="3")


def bert4keras_available() -> bool:
    import importlib.util

    return (importlib.util.find_spec("bert4keras") is not None
            and importlib.util.find_spec("tf_keras") is not None)


def run_bert4keras(program: str, payload):
    """Run ``program`` under bert4keras with ``payload`` as the JSON variable ``data``; the
    program leaves its answer in ``result``, which comes back decoded from JSON."""
    import json
    import subprocess
    import sys

    script = ("import json, sys\ndata = json.loads(sys.stdin.read())\n" + program
              + "\nprint('\\nRESULT ' + json.dumps(result))")
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(payload),
                          capture_output=True, text=True, env=BERT4KERAS_ENV, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"bert4keras reference failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.rsplit("\nRESULT ", 1)[1])
