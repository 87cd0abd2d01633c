"""The case the encoder benchmarks share: an HF BERT with random weights in the shape the
command line asks for (BERT-base by default), and a batch of random token ids."""


def add_shape_arguments(parser) -> None:
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)


def random_bert(args):
    """``(config, reference, token_ids)``: the bert4x config dict, the HF ``BertModel`` in eval
    mode (seeded, so every run has the same weights) and int32 ids [batch, length]."""
    import numpy as np
    import torch
    import transformers

    config = dict(vocab_size=21128, hidden_size=args.hidden, num_hidden_layers=args.layers,
                  num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
                  max_position_embeddings=512)
    torch.manual_seed(0)
    reference = transformers.BertModel(transformers.BertConfig(**config), add_pooling_layer=False)
    reference.eval()
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, config["vocab_size"], (args.batch, args.length)).astype("int32")
    return config, reference, token_ids
