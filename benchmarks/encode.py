"""Encoder forward throughput: bert4x on the running Keras backend vs HF transformers (PyTorch).

Both run the same random BERT weights (transformers writes them with ``save_pretrained``; bert4x
loads that file), on the same batch, in the same process, on the CPU, timed in turn. Prints the
host, then sequences/s for each bert4x execution mode of the backend, HF's figure, and the
ratio of each to HF.

    python benchmarks/encode.py                      # BERT-base, batch 32 x 128
    KERAS_BACKEND=jax python benchmarks/encode.py    # the same on JAX (or torch)
    python benchmarks/encode.py --layers 2 --repeats 2   # quick check
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bert_case import add_shape_arguments, random_bert  # noqa: E402
from host import interleaved, print_host  # noqa: E402


def execution_modes(model, token_ids, segment_ids):
    """The ways to run ``model`` forward that the running backend offers, by name."""
    import keras

    compiled = keras.models.clone_model(model)
    compiled.set_weights(model.get_weights())
    jit = keras.backend.backend() != "torch"  # Keras' torch backend does not compile
    compiled.compile(jit_compile=jit)
    inputs = [token_ids, segment_ids]
    modes = {"predict_on_batch": lambda: model.predict_on_batch(inputs),
             f"compile(jit_compile={jit}) predict": lambda: compiled.predict_on_batch(inputs)}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        tensors = [tf.constant(token_ids), tf.constant(segment_ids)]
        graph = tf.function(lambda x: model(x, training=False))
        xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
        modes["tf.function"] = lambda: graph(tensors)
        modes["tf.function+XLA"] = lambda: xla(tensors)
    elif keras.backend.backend() == "torch":
        import torch
        tensors = [torch.tensor(token_ids), torch.tensor(segment_ids)]

        def no_grad_call():
            with torch.no_grad():
                return model(tensors, training=False)
        modes["call under torch.no_grad"] = no_grad_call
    return modes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shape_arguments(parser)
    args = parser.parse_args()

    import keras
    import numpy as np
    import torch

    from bert4x import build_transformer_model

    config, reference, token_ids = random_bert(args)
    segment_ids = np.zeros_like(token_ids)

    with tempfile.TemporaryDirectory() as directory:
        reference.save_pretrained(directory)
        model = build_transformer_model(config, directory, model="bert")

    torch_inputs = dict(input_ids=torch.tensor(token_ids, dtype=torch.long),
                        token_type_ids=torch.tensor(segment_ids, dtype=torch.long),
                        attention_mask=torch.ones(token_ids.shape, dtype=torch.long))

    def run_hf():
        with torch.inference_mode():
            return reference(**torch_inputs).last_hidden_state

    modes = execution_modes(model, token_ids, segment_ids)
    expected = run_hf().numpy()
    print_host()
    print(f"BERT L={args.layers} H={args.hidden} A={args.heads}, batch {args.batch} x "
          f"{args.length} tokens, float32, CPU threads: torch {torch.get_num_threads()}")
    seconds = interleaved({"HF": run_hf, **modes}, args.repeats)
    hf_rate = args.batch / seconds["HF"]
    rows = [("HF transformers (PyTorch)", hf_rate, 1.0, 0.0)]
    for name, function in modes.items():
        difference = float(np.abs(keras.ops.convert_to_numpy(function()) - expected).max())
        rate = args.batch / seconds[name]
        rows.append((f"bert4x {name} [{keras.backend.backend()}]", rate, rate / hf_rate,
                     difference))
    print(f"{'implementation':48s} {'seq/s':>9s} {'vs HF':>7s} {'max |diff|':>11s}")
    for name, rate, ratio, difference in rows:
        print(f"{name:48s} {rate:9.2f} {ratio:7.2f} {difference:11.2e}")


if __name__ == "__main__":
    main()
