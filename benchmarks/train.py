"""Fine-tuning throughput: one training step of a BERT sentence classifier (pooler + 2-way
softmax, cross-entropy, Adam), bert4x float32 and mixed bfloat16 against HF transformers
PyTorch float32 and bfloat16 autocast, on the same random weights and the same batch.

bert4x's mixed bfloat16 is ``build_transformer_model(..., precision="bf16")``: float32 weights
and optimizer, bfloat16 matmuls, norms, softmax and the loss in float32. Each bert4x row is
``train_on_batch`` of a compiled model; on TensorFlow both with XLA and as a plain graph,
since oneDNN's bfloat16 matmuls run only outside XLA on CPU. All rows are timed interleaved.

Prints the host and its matmul limit, then for each contender: sequences/s, the ratio to
bert4x float32 and to HF float32, and the loss of its first step (the same weights and batch
give the same loss, up to dropout and precision).

    python benchmarks/train.py                        # 6-layer BERT, batch 16 x 128
    KERAS_BACKEND=torch python benchmarks/train.py       # the same on PyTorch (or jax)
    python benchmarks/train.py --layers 2 --repeats 2    # quick check
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bert_case import add_shape_arguments  # noqa: E402
from host import interleaved, print_host, print_rates  # noqa: E402

LEARNING_RATE = 2e-5


def hf_classifier(config, seed=0):
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(**config, num_labels=2))
    model.train()
    return model


def hf_step(model, inputs, labels, dtype):
    """One Adam step of ``model`` under autocast at ``dtype`` (float32: no autocast)."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    losses = []

    def step():
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return step, losses


def bert4x_step(config, checkpoint, head, inputs, labels, precision, jit_compile):
    """One Adam step of a bert4x classifier at ``precision``, loaded from ``checkpoint``, with
    the classifier's ``head`` weights (HF's, so every contender starts from the same model)."""
    import keras

    from bert4x import build_transformer_model
    from bert4x.models.precision import building_at

    with building_at(precision):
        backbone = build_transformer_model(config, checkpoint, model="bert", with_pool=True,
                                           allow_unused=True)
        # The logits layer in float32: the loss should see float32 (Keras' mixed precision
        # guide), and a 2-unit matmul costs nothing.
        logits = keras.layers.Dense(2, dtype="float32", name="classifier")(backbone.output)
    model = keras.Model(backbone.inputs, logits)
    model.get_layer("classifier").set_weights(head)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    losses = []

    def step():
        losses.append(float(model.train_on_batch(inputs, labels)))
    return step, losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shape_arguments(parser)
    parser.set_defaults(layers=6, batch=16, repeats=5)
    args = parser.parse_args()

    import keras
    import numpy as np
    import torch

    config = dict(vocab_size=21128, hidden_size=args.hidden, num_hidden_layers=args.layers,
                  num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
                  max_position_embeddings=512)
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, config["vocab_size"], (args.batch, args.length)).astype("int32")
    labels = rng.integers(0, 2, args.batch).astype("int32")
    torch_inputs = dict(input_ids=torch.tensor(token_ids, dtype=torch.long),
                        token_type_ids=torch.zeros(token_ids.shape, dtype=torch.long),
                        attention_mask=torch.ones(token_ids.shape, dtype=torch.long))
    torch_labels = torch.tensor(labels, dtype=torch.long)
    inputs = [token_ids, np.zeros_like(token_ids)]

    backend = keras.backend.backend()
    compiled = {"tensorflow": "XLA", "jax": "jit", "torch": "eager"}[backend]
    baseline = f"bert4x fp32 ({compiled})"
    contenders, losses = {}, {}
    with tempfile.TemporaryDirectory() as directory:
        reference = hf_classifier(config)
        reference.bert.save_pretrained(directory)
        head = [reference.classifier.weight.detach().numpy().T,
                reference.classifier.bias.detach().numpy()]
        variants = [(baseline, "fp32", True), (f"bert4x bf16 ({compiled})", "bf16", True)]
        if backend == "tensorflow":
            variants += [("bert4x fp32 (tf.function)", "fp32", False),
                         ("bert4x bf16 (tf.function)", "bf16", False)]
        for name, precision, jit_compile in variants:
            contenders[name], losses[name] = bert4x_step(config, directory, head, inputs,
                                                         labels, precision, jit_compile)
    for name, dtype in (("HF fp32", torch.float32), ("HF bf16 autocast", torch.bfloat16)):
        contenders[name], losses[name] = hf_step(hf_classifier(config), torch_inputs,
                                                 torch_labels, dtype)

    print_host()
    print(f"BERT L={args.layers} H={args.hidden} A={args.heads} + classifier, batch "
          f"{args.batch} x {args.length} tokens, Adam; torch threads {torch.get_num_threads()}")
    seconds = interleaved(contenders, args.repeats)
    print_rates(seconds, args.batch, baseline, "HF fp32", extra={
        "first loss": {name: f"{values[0]:.4f}" for name, values in losses.items()}})


if __name__ == "__main__":
    main()
