"""Encoder inference at float32, bfloat16 and int8: bert4x against HF transformers (PyTorch
float32 and bfloat16 autocast) and ONNX Runtime (the HF model exported to ONNX, float32 and its
dynamic int8 quantization), on the same random BERT weights and the same batch.

bert4x's precisions come from ``build_transformer_model(..., precision=)``. Each runs the way
that is fastest for it on the running backend, measured here (TensorFlow CPU: float32 and int8
under XLA, bfloat16 in a plain ``tf.function``, where oneDNN's bfloat16 matmuls run; XLA's CPU
bfloat16 matmul is no faster than float32). On TensorFlow also bert4x's int8 for a CPU server:
the float32 model exported and quantized for ONNX Runtime (``bert4x export --format
onnx_int8``). All contenders are timed interleaved.

Prints the host and its matmul limit, then for each contender: sequences/s, the ratio to
bert4x float32 (compiled where the backend compiles) and to HF float32, the float32 figure as
GFLOP/s, and the least cosine between its mean-pooled sentence vectors and HF float32's.

    python benchmarks/precision.py                       # BERT-base, batch 32 x 128
    KERAS_BACKEND=torch python benchmarks/precision.py      # the same on PyTorch (or jax)
    python benchmarks/precision.py --layers 2 --repeats 2   # quick check
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bert_case import add_shape_arguments, random_bert  # noqa: E402
from host import interleaved, print_host, print_rates  # noqa: E402

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: How ``bert4x_forward(..., xla=True)`` runs on each backend.
COMPILED = {"tensorflow": "XLA", "jax": "jit", "torch": "eager, no_grad"}


def bert4x_forward(model, inputs, xla: bool):
    """``model`` forward on the running backend, compiled (XLA or jit) or as a graph/eager."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        tensors = [tf.constant(x) for x in inputs]
        function = tf.function(lambda x: model(x, training=False), jit_compile=xla)
        return lambda: function(tensors)
    if backend == "jax":
        import jax
        state = [v.value for v in model.trainable_variables], \
            [v.value for v in model.non_trainable_variables]
        function = jax.jit(lambda s, x: model.stateless_call(*s, x, training=False)[0])
        return lambda: function(state, inputs).block_until_ready()
    import torch
    tensors = [torch.tensor(x) for x in inputs]

    def call():
        with torch.no_grad():
            return model(tensors, training=False)
    return call


def onnx_sessions(reference, token_ids, directory):
    """ONNX Runtime sessions for ``reference`` exported at the benchmark's shape: float32 and
    its dynamic int8 quantization (the CPU user's alternative to a framework)."""
    import numpy as np
    import onnxruntime
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class LastHiddenState(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    arrays = dict(zip(INPUT_NAMES, (token_ids.astype(np.int64), np.ones_like(token_ids, np.int64),
                                    np.zeros_like(token_ids, np.int64))))
    float_path, int8_path = (os.path.join(directory, name) for name in ("fp32.onnx", "int8.onnx"))
    # In eval mode: the exporter restores the wrapper's mode afterwards, and a new module
    # is in training mode, which would switch the HF model's dropout on for the other runs.
    example = tuple(torch.tensor(arrays[name]) for name in INPUT_NAMES)
    torch.onnx.export(LastHiddenState(reference).eval(), example, float_path,
                      input_names=list(INPUT_NAMES), dynamo=False, opset_version=17)
    quantize_dynamic(float_path, int8_path, weight_type=QuantType.QInt8)
    sessions = {name: onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
                for name, path in (("fp32", float_path), ("int8", int8_path))}
    return {name: (lambda s=session: s.run(None, arrays)[0]) for name, session in sessions.items()}


def exported_int8(model, inputs, directory):
    """bert4x's int8 for a CPU server: ``model`` exported to ONNX and quantized by ONNX
    Runtime, run by ONNX Runtime. The export runs as ``bert4x export --format onnx_int8`` in a
    child process, before the other models are built: tf2onnx's conversion of BERT-base peaks
    at about 18 GB, which this process's own models would push past the machine's memory."""
    import subprocess

    import onnxruntime

    model.save(os.path.join(directory, "bert4x.keras"))
    subprocess.run([sys.executable, "-m", "bert4x.cli", "export", "--model",
                    os.path.join(directory, "bert4x.keras"), "--format", "onnx_int8",
                    "--output", os.path.join(directory, "bert4x")], check=True,
                   stdout=subprocess.DEVNULL)
    session = onnxruntime.InferenceSession(os.path.join(directory, "bert4x", "model.int8.onnx"),
                                           providers=["CPUExecutionProvider"])
    feeds = dict(zip(("token_ids", "segment_ids"), inputs))
    return lambda: session.run(None, feeds)[0]


def mean_vectors(hidden):
    """Mean-pooled float64 sentence vectors from any contender's output: a NumPy array (ONNX
    Runtime), a torch tensor (HF, bfloat16 under autocast) or a Keras backend tensor."""
    import keras
    import numpy as np
    import torch
    if isinstance(hidden, torch.Tensor):
        hidden = hidden.float().numpy()
    elif not isinstance(hidden, np.ndarray):
        hidden = keras.ops.convert_to_numpy(keras.ops.cast(hidden, "float32"))
    return np.asarray(hidden, "float64").mean(axis=1)


def least_cosine(vectors, expected):
    import numpy as np
    return float((np.sum(vectors * expected, axis=1) / np.linalg.norm(vectors, axis=1)
                  / np.linalg.norm(expected, axis=1)).min())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shape_arguments(parser)
    args = parser.parse_args()

    import keras
    import numpy as np
    import torch

    from bert4x import build_transformer_model

    config, reference, token_ids = random_bert(args)
    inputs = [token_ids, np.zeros_like(token_ids)]
    torch_inputs = dict(input_ids=torch.tensor(token_ids, dtype=torch.long),
                        token_type_ids=torch.zeros(token_ids.shape, dtype=torch.long),
                        attention_mask=torch.ones(token_ids.shape, dtype=torch.long))

    def hf(dtype):
        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype,
                                                        enabled=dtype != torch.float32):
                return reference(**torch_inputs).last_hidden_state
        return run

    tensorflow = keras.backend.backend() == "tensorflow"
    baseline = f"bert4x fp32 ({COMPILED[keras.backend.backend()]})"
    contenders = {}
    with tempfile.TemporaryDirectory() as directory:
        reference.save_pretrained(directory)
        models = {"fp32": build_transformer_model(config, directory, model="bert",
                                                  precision="fp32")}
        if tensorflow:
            exported = exported_int8(models["fp32"], inputs, directory)
        models.update({precision: build_transformer_model(config, directory, model="bert",
                                                          precision=precision)
                       for precision in ("bf16", "int8")})
        contenders[baseline] = bert4x_forward(models["fp32"], inputs, xla=True)
        if tensorflow:
            contenders["bert4x fp32 (tf.function)"] = bert4x_forward(models["fp32"], inputs,
                                                                     xla=False)
        contenders["bert4x bf16"] = bert4x_forward(models["bf16"], inputs, xla=not tensorflow)
        contenders["bert4x int8"] = bert4x_forward(models["int8"], inputs, xla=True)
        contenders["HF fp32"] = hf(torch.float32)
        contenders["HF bf16 autocast"] = hf(torch.bfloat16)
        onnx = onnx_sessions(reference, token_ids, directory)
        assert not reference.training
        if tensorflow:
            contenders["bert4x int8 (ONNX export)"] = exported
    contenders["ONNX Runtime fp32"] = onnx["fp32"]
    contenders["ONNX Runtime int8"] = onnx["int8"]

    expected = mean_vectors(hf(torch.float32)())
    cosines = {name: least_cosine(mean_vectors(run()), expected)
               for name, run in contenders.items()}
    print_host(("float32", "bfloat16", "int8"))
    print(f"BERT L={args.layers} H={args.hidden} A={args.heads}, batch {args.batch} x "
          f"{args.length} tokens; torch threads {torch.get_num_threads()}")
    seconds = interleaved(contenders, args.repeats)
    tokens = args.batch * args.length
    flops = args.layers * (tokens * 2 * (4 * args.hidden ** 2 + 2 * args.hidden * 4 * args.hidden)
                           + args.batch * 2 * 2 * args.length ** 2 * args.hidden)
    print_rates(seconds, args.batch, baseline, "HF fp32", extra={
        "GFLOP/s": {name: f"{flops / time / 1e9:.0f}" for name, time in seconds.items()},
        "least cosine": {name: f"{cosine:.6f}" for name, cosine in cosines.items()}})


if __name__ == "__main__":
    main()
