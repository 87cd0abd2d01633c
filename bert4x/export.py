"""A model out of Keras: a TF SavedModel for TF Serving and an ONNX file for ONNX Runtime.

Both are traced from one function of the model's inputs under stable names (``token_ids``,
``segment_ids``, and the lower-cased rest, e.g. ``subject`` for ``Input-Subject``), with the
batch and sequence axes left free, and both return a dict of the model's outputs by name. A
SavedModel can also carry a ``serve_text`` signature that takes raw strings and tokenizes them
in the graph with TensorFlow Text's WordPiece, the same pieces as :class:`bert4x.Tokenizer`
(``tests/test_export.py`` compares them on real Chinese text); ONNX has no string ops for it.

The export needs the TensorFlow backend: a SavedModel is a TF graph, and the ONNX file is
converted from that graph by ``tf2onnx``.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

import keras
import numpy as np

ONNX_OPSET = 17
# Inputs with a fixed meaning get the names serving clients use; the rest are derived.
INPUT_NAMES = {"Input-Token": "token_ids", "Input-Segment": "segment_ids"}


class ExportError(ValueError):
    """An export this setup cannot make (another backend, TensorFlow Text missing); a
    ValueError, so the command line prints it as one line."""


def _require_tensorflow(what: str):
    if keras.backend.backend() != "tensorflow":
        raise ExportError(f"{what} needs the TensorFlow backend (KERAS_BACKEND=tensorflow); "
                          f"this process runs {keras.backend.backend()!r}")
    import tensorflow as tf
    return tf


def input_name(keras_name: str) -> str:
    """``Input-Token`` -> ``token_ids``; ``Input-Subject`` -> ``subject``."""
    if keras_name in INPUT_NAMES:
        return INPUT_NAMES[keras_name]
    bare = keras_name[len("Input-"):] if keras_name.startswith("Input-") else keras_name
    return re.sub(r"\W+", "_", bare).strip("_").lower() or "input"


def output_names(model: keras.Model) -> List[str]:
    """The model's output layer names made identifier-safe (``MLM-Activation`` ->
    ``mlm_activation``); a lone output is ``output``."""
    if len(model.outputs) == 1:
        return ["output"]
    names = [re.sub(r"\W+", "_", t._keras_history.operation.name).strip("_").lower()
             for t in model.outputs]
    return names if len(set(names)) == len(names) else [f"output_{i}" for i in range(len(names))]


def input_signature(model: keras.Model):
    """One ``tf.TensorSpec`` per model input: its dtype and shape, batch (and any sequence)
    axes free."""
    tf = _require_tensorflow("an export signature")
    return [tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype, name=input_name(tensor.name))
            for tensor in model.inputs]


def serving_function(model: keras.Model):
    """``tf.function`` of the inputs (positional, in model order) -> {output name: tensor}."""
    tf = _require_tensorflow("an export")
    names = output_names(model)

    @tf.function(input_signature=input_signature(model))
    def serve(*inputs):
        outputs = model(list(inputs), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return dict(zip(names, outputs))

    return serve


class TextSignature:
    """What ``serve_text`` needs: the WordPiece vocabulary and the longest sequence.

    Texts become ``[CLS] pieces [SEP]``, cut to ``maxlen`` tokens and zero-padded: what
    ``Tokenizer.encode_batch(texts, maxlen=maxlen)`` gives, as tensors.
    """

    def __init__(self, tokenizer, maxlen: int):
        if maxlen < 3:
            raise ValueError(f"maxlen must leave room for [CLS] and [SEP], got {maxlen}")
        self.tokenizer, self.maxlen = tokenizer, maxlen

    def build(self):
        """A ``tf.Module`` holding the in-graph tokenizer (its vocabulary table is saved with
        the model) and the function texts -> (token ids, segment ids)."""
        tf = _require_tensorflow("in-graph tokenization")
        try:
            import tensorflow_text as tf_text
        except ImportError as error:
            raise ExportError("a raw-text signature needs TensorFlow Text: pip install "
                              "tensorflow-text (or export without a vocabulary)") from error
        tokenizer = self.tokenizer
        vocab = [tokenizer.id_to_token[i] for i in range(tokenizer.vocab_size)]
        module = tf.Module()
        module.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(vocab, tf.range(len(vocab), dtype=tf.int64)),
            default_value=tokenizer.unk_id)
        # TF Text's own lower_case also applies NFKC, which turns full-width characters ('，',
        # '２') into ASCII; BERT's (and our) lower-casing is lower case + NFD without accents.
        module.wordpiece = tf_text.BertTokenizer(
            module.table, token_out_type=tf.int64, lower_case=False,
            unknown_token=tokenizer.unk_token,
            max_chars_per_token=tokenizer.max_input_chars_per_word)
        cls_id, sep_id, body = tokenizer.cls_id, tokenizer.sep_id, self.maxlen - 2
        lower_case = tokenizer.do_lower_case

        def encode(texts):
            # As Tokenizer: drop control and format characters (tab, newline and CR stay, as
            # white space) and U+FFFD.
            texts = tf.strings.regex_replace(texts, r"[^\P{C}\t\n\r]|\x{FFFD}", "")
            if lower_case:
                texts = tf_text.normalize_utf8(tf.strings.lower(texts, encoding="utf-8"), "NFD")
                texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
            pieces = module.wordpiece.tokenize(texts).merge_dims(-2, -1)[:, :body]
            rows = tf.shape(texts, out_type=tf.int64)[0]
            ends = tf.RaggedTensor.from_tensor(tf.fill([rows, 1], tf.constant(sep_id, tf.int64)))
            starts = tf.RaggedTensor.from_tensor(tf.fill([rows, 1], tf.constant(cls_id, tf.int64)))
            token_ids = tf.cast(tf.concat([starts, pieces, ends], axis=1).to_tensor(0), tf.int32)
            return token_ids, tf.zeros_like(token_ids)

        module.encode = encode
        return module


def export_saved_model(model: keras.Model, directory, text: Optional[TextSignature] = None,
                       endpoints: Optional[dict] = None) -> str:
    """Write a SavedModel with ``serving_default`` (the inputs by name) and, given ``text``,
    ``serve_text`` (``text``: a string vector; the model must take token and segment ids).
    ``endpoints``: more signatures, ``{name: (function, input signature)}`` (a task's
    in-graph decoding, say)."""
    tf = _require_tensorflow("a SavedModel export")
    archive = keras.export.ExportArchive()
    archive.track(model)
    serve = serving_function(model)
    archive.add_endpoint("serving_default", serve, input_signature=input_signature(model))
    if text is not None:
        names = [input_name(t.name) for t in model.inputs]
        if names != ["token_ids", "segment_ids"]:
            raise ValueError(f"serve_text feeds token and segment ids; this model takes {names}")
        tokenization = text.build()
        archive.track(tokenization)

        def serve_text(texts):
            token_ids, segment_ids = tokenization.encode(texts)
            return {**serve(token_ids, segment_ids), "token_ids": token_ids}

        archive.add_endpoint("serve_text", serve_text,
                             input_signature=[tf.TensorSpec((None,), tf.string, name="text")])
    for name, (function, signature) in (endpoints or {}).items():
        archive.add_endpoint(name, function, input_signature=signature)
    archive.write_out(str(directory), verbose=False)
    return str(directory)


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx handler: ONNX has Erf but no Erfc, which TF's exact GELU lowers to."""
    from tf2onnx import utils

    del name, args
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(utils.make_name("erfc_one"), np.array(1, dtype))
    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
    shapes, dtypes = node.output_shapes, node.output_dtypes
    ctx.remove_node(node.name)
    ctx.make_node("Sub", [one.output[0], erf.output[0]], outputs=node.output, name=node.name,
                  shapes=shapes, dtypes=dtypes)


def export_onnx(model: keras.Model, path, opset: int = ONNX_OPSET) -> str:
    """Write an ONNX model with the same inputs and outputs as the SavedModel's default."""
    _require_tensorflow("an ONNX export")
    import tf2onnx

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tf2onnx.convert.from_function(
        serving_function(model), input_signature=input_signature(model), opset=opset,
        custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])}, output_path=str(path))
    return str(path)


def run_saved_model(directory, inputs: Dict[str, np.ndarray],
                    signature: str = "serving_default") -> Dict[str, np.ndarray]:
    """Outputs of a SavedModel signature as NumPy arrays, the way TF Serving would call it."""
    tf = _require_tensorflow("loading a SavedModel")
    function = tf.saved_model.load(str(directory)).signatures[signature]
    return {name: value.numpy() for name, value in function(**{
        name: tf.constant(value) for name, value in inputs.items()}).items()}


def run_onnx(path, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Outputs of an ONNX model by name, through ONNX Runtime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


def quantize_onnx(float_path, int8_path) -> str:
    """ONNX Runtime's dynamic int8 quantization of an exported float model: int8 weights, and
    activations quantized per call. Why offer it beside ``precision="int8"`` in Keras: ONNX
    Runtime's int8 matmul uses the CPU's VNNI instructions, and the int8 matmuls Keras reaches
    are slower (XLA's and PyTorch's ``_int_mm``: 717 and 849 GOP/s on our host against
    TensorFlow's float32 445 GFLOP/s). On BERT-base this file runs at 2.0x our float32 model
    (``docs/experiments.md``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(float_path), str(int8_path), weight_type=QuantType.QInt8)
    return str(int8_path)


#: ``onnx_int8`` is ``model.int8.onnx``, quantized from ``model.onnx``, which it writes too.
FORMATS = ("saved_model", "onnx", "onnx_int8")
#: What an export writes unless asked otherwise: int8 costs accuracy, so it is chosen.
DEFAULT_FORMATS = ("saved_model", "onnx")


def export_model(model: keras.Model, output_dir, formats=DEFAULT_FORMATS, tokenizer=None,
                 maxlen: Optional[int] = None, metadata: Optional[dict] = None,
                 endpoints: Optional[dict] = None) -> dict:
    """Everything a server outside this library needs, in ``output_dir``: ``saved_model/``,
    ``model.onnx``, the tokenizer's ``vocab.txt`` and ``export.json`` (inputs, outputs,
    ``maxlen``, lower-casing, signatures and the caller's ``metadata``). With a tokenizer and
    ``maxlen``, and a model on token and segment ids, the SavedModel also gets ``serve_text``;
    ``endpoints`` adds signatures to the SavedModel (see :func:`export_saved_model`)."""
    import json

    from bert4x.files import atomic_path
    from bert4x.tokenizers import save_vocab

    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"formats must be some of {FORMATS}, got {list(formats)}")
    os.makedirs(output_dir, exist_ok=True)
    names = [input_name(t.name) for t in model.inputs]
    text = None
    if tokenizer is not None and maxlen is not None and names == ["token_ids", "segment_ids"]:
        text = TextSignature(tokenizer, maxlen)
    written = {}
    if "saved_model" in formats:
        written["saved_model"] = export_saved_model(
            model, os.path.join(output_dir, "saved_model"), text=text, endpoints=endpoints)
    if "onnx" in formats or "onnx_int8" in formats:
        written["onnx"] = export_onnx(model, os.path.join(output_dir, "model.onnx"))
    if "onnx_int8" in formats:
        written["onnx_int8"] = quantize_onnx(written["onnx"],
                                             os.path.join(output_dir, "model.int8.onnx"))
    description = dict(inputs={name: [str(t.dtype), list(t.shape)]
                               for name, t in zip(names, model.inputs)},
                       outputs=output_names(model), maxlen=maxlen,
                       text_signature="serve_text" if text is not None else None,
                       signatures=["serving_default", *(["serve_text"] if text else []),
                                   *(endpoints or {})],
                       **(metadata or {}))
    if tokenizer is not None:
        written["vocab"] = os.path.join(output_dir, "vocab.txt")
        save_vocab(tokenizer.token_to_id, written["vocab"])
        description["do_lower_case"] = tokenizer.do_lower_case
    with atomic_path(os.path.join(output_dir, "export.json")) as path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(description, handle, ensure_ascii=False, indent=1)
    written["description"] = os.path.join(output_dir, "export.json")
    return written
