"""bert4x vs HF transformers (PyTorch CPU) on the same random weights, moved by our loaders."""

import numpy as np
import pytest

from bert4x import build_transformer_model
from tests.references import (
    hf_gpt2, hf_model, hf_outputs, hf_state_as_google, hf_t5, random_batch,
    write_google_checkpoint,
)

TOLERANCE = 1e-4
LENGTHS = [9, 5, 1, 7]  # real padding in every row but the first

SHAPES = {
    "base": dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=64),
    "wide-heads": dict(vocab_size=61, hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=20, max_position_embeddings=16, type_vocab_size=3,
                       layer_norm_eps=1e-5),
    "tanh-gelu": dict(vocab_size=50, hidden_size=24, num_hidden_layers=3, num_attention_heads=6,
                      intermediate_size=64, max_position_embeddings=32, hidden_act="gelu_new"),
}
ROFORMER_SMALL_EMBEDDING = dict(SHAPES["base"], embedding_size=20)


def assert_unpadded_close(ours, reference, token_ids):
    keep = token_ids != 0
    np.testing.assert_allclose(np.asarray(ours)[keep], reference[keep], atol=TOLERANCE, rtol=0)


def randomise(built, seed):
    """Every weight of a bert4x model random (norms and biases too), before an export."""
    rng = np.random.default_rng(seed)
    for variable in built.model.weights:
        variable.assign(rng.normal(0, 0.2, variable.shape).astype("float32"))


def save_hf(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    return tmp_path


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_bert_model_sequence_and_pooled_output(shape, tmp_path):
    config = SHAPES[shape]
    reference = hf_model("bert", "model", **config)
    token_ids, segment_ids = random_batch(config["vocab_size"], LENGTHS,
                                          type_vocab_size=config.get("type_vocab_size", 2))
    expected = hf_outputs(reference, token_ids, segment_ids)
    model = build_transformer_model(config, save_hf(reference, tmp_path), model="bert",
                                     with_pool=True)
    # with_pool alone returns the pooled output; the sequence output stays reachable by name.
    import keras
    both = keras.Model(model.inputs, [model.get_layer("Transformer-%d-FeedForward-Norm"
                                                      % (config["num_hidden_layers"] - 1)).output,
                                      model.output])
    sequence, pooled = both.predict([token_ids, segment_ids], verbose=0)
    assert_unpadded_close(sequence, expected["last_hidden_state"], token_ids)
    np.testing.assert_allclose(pooled, expected["pooler_output"], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_bert_mlm_logits(shape, tmp_path):
    config = SHAPES[shape]
    reference = hf_model("bert", "mlm", seed=1, **config)
    token_ids, segment_ids = random_batch(config["vocab_size"], LENGTHS, seed=1,
                                          type_vocab_size=config.get("type_vocab_size", 2))
    expected = hf_outputs(reference, token_ids, segment_ids)
    model = build_transformer_model(config, save_hf(reference, tmp_path), model="bert",
                                    with_mlm="linear")
    logits = model.predict([token_ids, segment_ids], verbose=0)
    assert_unpadded_close(logits, expected["logits"], token_ids)


@pytest.mark.parametrize("config", [SHAPES["base"], SHAPES["wide-heads"], SHAPES["tanh-gelu"],
                                    ROFORMER_SMALL_EMBEDDING],
                         ids=["base", "wide-heads", "tanh-gelu", "embedding-20"])
def test_roformer_model_and_mlm(config, tmp_path):
    for head, seed in (("model", 2), ("mlm", 3)):
        reference = hf_model("roformer", head, seed=seed, **config)
        token_ids, segment_ids = random_batch(config["vocab_size"], LENGTHS, seed=seed,
                                              type_vocab_size=config.get("type_vocab_size", 2))
        expected = hf_outputs(reference, token_ids, segment_ids)
        path = save_hf(reference, tmp_path / head)
        if head == "model":
            model = build_transformer_model(config, path, model="roformer")
            assert_unpadded_close(model.predict([token_ids, segment_ids], verbose=0),
                                  expected["last_hidden_state"], token_ids)
        else:
            model = build_transformer_model(config, path, model="roformer", with_mlm="linear")
            assert_unpadded_close(model.predict([token_ids, segment_ids], verbose=0),
                                  expected["logits"], token_ids)


def test_pytorch_bin_loads_like_safetensors(tmp_path):
    import torch

    config = SHAPES["base"]
    reference = hf_model("roformer", "mlm", seed=4, **config)
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    token_ids, segment_ids = random_batch(config["vocab_size"], LENGTHS, seed=4)
    model = build_transformer_model(config, tmp_path / "pytorch_model.bin", model="roformer",
                                    with_mlm="linear")
    assert_unpadded_close(model.predict([token_ids, segment_ids], verbose=0),
                          hf_outputs(reference, token_ids, segment_ids)["logits"], token_ids)


@pytest.mark.parametrize("family", ["bert", "roformer"])
def test_google_tf_checkpoint_gives_same_outputs(family, tmp_path):
    config = ROFORMER_SMALL_EMBEDDING if family == "roformer" else SHAPES["base"]
    reference = hf_model(family, "mlm", seed=5, **config)
    prefix = write_google_checkpoint(str(tmp_path / "bert_model.ckpt"),
                                     hf_state_as_google(reference))
    token_ids, segment_ids = random_batch(config["vocab_size"], LENGTHS, seed=5)
    built = build_transformer_model(config, prefix, model=family, with_mlm="linear",
                                    return_keras_model=False)
    assert built.load_report.fmt == "google"
    assert not built.load_report.missing and not built.load_report.unused
    assert_unpadded_close(built.model.predict([token_ids, segment_ids], verbose=0),
                          hf_outputs(reference, token_ids, segment_ids)["logits"], token_ids)


@pytest.mark.parametrize("family,config", [("bert", SHAPES["base"]),
                                           ("roformer", ROFORMER_SMALL_EMBEDDING)])
def test_export_round_trip_through_transformers(family, config, tmp_path):
    import transformers

    built = build_transformer_model(config, model=family, with_mlm="linear",
                                    return_keras_model=False)
    randomise(built, seed=6)
    built.export_huggingface(tmp_path)
    token_ids, segment_ids = random_batch(config["vocab_size"], LENGTHS, seed=6)
    auto = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    expected = hf_outputs(auto, token_ids, segment_ids)["logits"]
    assert_unpadded_close(built.model.predict([token_ids, segment_ids], verbose=0), expected,
                          token_ids)


# ALBERT and ELECTRA: built from the config.json HF wrote, as a user would, so the config keys
# of those families are read too. Embeddings of 20 against a hidden size of 32 (factorised).
ZOO_SHAPE = dict(SHAPES["base"], num_hidden_layers=3, embedding_size=20)


def hf_reference(family, head, tmp_path, seed, **config):
    """An HF model with random weights, its saved directory, and its outputs on a batch."""
    reference = hf_model(family, head, seed=seed, **config)
    path = save_hf(reference, tmp_path / f"{family}-{head}")
    token_ids, segment_ids = random_batch(config["vocab_size"], LENGTHS, seed=seed)
    return reference, path, (token_ids, segment_ids), hf_outputs(reference, token_ids, segment_ids)


@pytest.mark.parametrize("hidden_act", ["gelu_new", "gelu"])
def test_albert_model_mlm_and_unshared(hidden_act, tmp_path):
    config = dict(ZOO_SHAPE, hidden_act=hidden_act)
    _, path, batch, expected = hf_reference("albert", "model", tmp_path, 7, **config)
    pooler = build_transformer_model(path / "config.json", path, model="albert", with_pool=True)
    np.testing.assert_allclose(pooler.predict(list(batch), verbose=0), expected["pooler_output"],
                               atol=TOLERANCE, rtol=0)
    built = build_transformer_model(path / "config.json", path, model="albert",
                                    return_keras_model=False)
    assert built.load_report.skipped_heads == ["pooler.bias", "pooler.weight"]
    assert_unpadded_close(built.model.predict(list(batch), verbose=0),
                          expected["last_hidden_state"], batch[0])
    # One block, shared: ALBERT's weights do not grow with depth.
    unshared = build_transformer_model(path / "config.json", path, model="albert_unshared",
                                       allow_unused=True)
    assert len(unshared.weights) > len(built.model.weights)
    assert_unpadded_close(unshared.predict(list(batch), verbose=0),
                          expected["last_hidden_state"], batch[0])

    _, path, batch, expected = hf_reference("albert", "mlm", tmp_path, 8, **config)
    model = build_transformer_model(path / "config.json", path, model="albert",
                                    with_mlm="linear")
    assert_unpadded_close(model.predict(list(batch), verbose=0), expected["logits"], batch[0])


def test_electra_discriminator_and_generator(tmp_path):
    _, path, batch, expected = hf_reference("electra", "discriminator", tmp_path, 9, **ZOO_SHAPE)
    built = build_transformer_model(path / "config.json", path, model="electra",
                                    with_discriminator=True, return_keras_model=False)
    assert not built.load_report.skipped_heads and not built.load_report.unused
    probabilities = built.model.predict(list(batch), verbose=0)[..., 0]
    logits = expected["logits"]
    assert_unpadded_close(probabilities, 1 / (1 + np.exp(-logits)), batch[0])

    _, path, batch, expected = hf_reference("electra", "mlm", tmp_path, 10, **ZOO_SHAPE)
    model = build_transformer_model(path / "config.json", path, model="electra",
                                    with_mlm="linear")
    assert_unpadded_close(model.predict(list(batch), verbose=0), expected["logits"], batch[0])
    # The encoder alone from the generator's file: its head is skipped, and said so.
    encoder = build_transformer_model(path / "config.json", path, model="electra",
                                      return_keras_model=False)
    assert sorted(encoder.load_report.skipped_heads) == [
        "generator_lm_head.bias", "generator_predictions.LayerNorm.bias",
        "generator_predictions.LayerNorm.weight", "generator_predictions.dense.bias",
        "generator_predictions.dense.weight"]


@pytest.mark.parametrize("family,head,options", [
    ("albert", "mlm", dict(with_mlm="linear")),
    ("electra", "discriminator", dict(with_discriminator="linear")),
    ("electra", "mlm", dict(with_mlm="linear")),
])
def test_release_checkpoints_of_albert_and_electra(family, head, options, tmp_path):
    """The Google-format names of the original releases, from HF's conversion rules."""
    reference, path, batch, expected = hf_reference(family, head, tmp_path, 11, **ZOO_SHAPE)
    prefix = write_google_checkpoint(str(tmp_path / "model.ckpt"), hf_state_as_google(reference))
    built = build_transformer_model(path / "config.json", prefix, model=family,
                                    return_keras_model=False, **options)
    assert built.load_report.fmt == "google"
    assert not built.load_report.missing and not built.load_report.unused
    output = built.model.predict(list(batch), verbose=0)
    assert_unpadded_close(output[..., 0] if head == "discriminator" else output,
                          expected["logits"], batch[0])


@pytest.mark.parametrize("family,options,auto_class", [
    ("albert", dict(with_mlm="linear"), "AutoModelForMaskedLM"),
    ("electra", dict(with_mlm="linear"), "AutoModelForMaskedLM"),
    ("electra", dict(with_discriminator="linear"), "AutoModelForPreTraining"),
])
def test_albert_and_electra_export_through_transformers(family, options, auto_class, tmp_path):
    import transformers

    built = build_transformer_model(ZOO_SHAPE, model=family, return_keras_model=False, **options)
    randomise(built, seed=12)
    built.export_huggingface(tmp_path)
    auto = getattr(transformers, auto_class).from_pretrained(tmp_path).eval()
    token_ids, segment_ids = random_batch(ZOO_SHAPE["vocab_size"], LENGTHS, seed=12)
    output = built.model.predict([token_ids, segment_ids], verbose=0)
    assert_unpadded_close(output[..., 0] if "with_discriminator" in options else output,
                          hf_outputs(auto, token_ids, segment_ids)["logits"], token_ids)


GPT2_SHAPE = dict(vocab_size=97, n_embd=32, n_layer=3, n_head=4, n_positions=64)


def test_gpt2_logits_with_padding(tmp_path):
    import torch

    reference = hf_gpt2(seed=13, **GPT2_SHAPE)
    path = save_hf(reference, tmp_path)
    token_ids, _ = random_batch(GPT2_SHAPE["vocab_size"], LENGTHS, seed=13)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(token_ids, dtype=torch.long),
                             attention_mask=torch.tensor(token_ids != 0)).logits.numpy()
    # No segment embedding: the segment input is taken and ignored.
    model = build_transformer_model(path / "config.json", path, model="gpt2", with_mlm="linear")
    logits = model.predict([token_ids, np.zeros_like(token_ids)], verbose=0)
    assert_unpadded_close(logits, expected, token_ids)


@pytest.mark.parametrize("use_cache", [True, False])
def test_gpt2_greedy_and_beam_search_equal_hf_generate(use_cache, tmp_path):
    import torch
    from bert4x.generation import AutoRegressiveDecoder

    reference = hf_gpt2(seed=14, **GPT2_SHAPE)
    path = save_hf(reference, tmp_path)
    model = build_transformer_model(path / "config.json", path, model="gpt2")
    decoder = AutoRegressiveDecoder(model, end_id=None, max_new_tokens=24, use_cache=use_cache)
    prefix = [5, 8, 13, 2, 40, 77]
    options = dict(max_new_tokens=24, do_sample=False, suppress_tokens=[0], use_cache=True)
    with torch.no_grad():
        greedy = reference.generate(torch.tensor([prefix]), **options)[0, len(prefix):]
        beams = reference.generate(torch.tensor([prefix]), num_beams=4, num_return_sequences=4,
                                   length_penalty=0.0, output_scores=True,
                                   return_dict_in_generate=True, **options)
    assert decoder.greedy(prefix).tokens == greedy.tolist()
    ours = decoder.beam_search(prefix, beam_size=4)
    assert [h.tokens for h in ours] == beams.sequences[:, len(prefix):].tolist()
    np.testing.assert_allclose([h.score for h in ours], beams.sequences_scores.numpy(),
                               rtol=1e-5)


def test_gpt2_export_round_trip_through_transformers(tmp_path):
    import torch
    import transformers

    built = build_transformer_model(GPT2_SHAPE, model="gpt2", with_mlm="linear",
                                    return_keras_model=False)
    randomise(built, seed=15)
    built.export_huggingface(tmp_path)
    reference = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    token_ids, _ = random_batch(GPT2_SHAPE["vocab_size"], LENGTHS, seed=15)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(token_ids, dtype=torch.long),
                             attention_mask=torch.tensor(token_ids != 0)).logits.numpy()
    assert_unpadded_close(built.model.predict([token_ids, np.zeros_like(token_ids)], verbose=0),
                          expected, token_ids)


# T5: the decoder one layer deeper than the encoder, few buckets and a short maximum distance
# so that the log-spaced buckets and the clipping are both reached by 30-token sources.
T5_SHAPE = dict(vocab_size=97, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=3,
                num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20)
T5_CASES = [("t5", "t5", dict(feed_forward_proj="relu")),
            ("t5", "t5.1.1", dict(feed_forward_proj="gated-gelu")),
            ("mt5", "mt5.1.1", {})]


def t5_batch(seed):
    """Sources with padding, and decoder inputs that start from id 0 (T5's start token)."""
    sources, _ = random_batch(97, [30, 5, 1, 27], seed=seed)
    targets, _ = random_batch(97, [9, 4, 1, 7], seed=seed + 1)
    targets[:, 0] = 0
    return sources, targets, np.arange(targets.shape[1])[None] < np.array([[9], [4], [1], [7]])


def hf_seq2seq(reference, sources, targets):
    import torch

    with torch.no_grad():
        out = reference(input_ids=torch.tensor(sources, dtype=torch.long),
                        attention_mask=torch.tensor(sources != 0),
                        decoder_input_ids=torch.tensor(targets, dtype=torch.long),
                        output_hidden_states=True)
    return out


@pytest.mark.parametrize("family,model,options", T5_CASES, ids=[c[1] for c in T5_CASES])
def test_t5_encoder_output_and_decoder_logits(family, model, options, tmp_path):
    reference = hf_t5(family, seed=16, **T5_SHAPE, **options)
    path = save_hf(reference, tmp_path)
    sources, targets, real = t5_batch(16)
    expected = hf_seq2seq(reference, sources, targets)
    seq2seq = build_transformer_model(path / "config.json", path, model=model, with_mlm="linear")
    np.testing.assert_allclose(seq2seq.predict([sources, targets], verbose=0)[real],
                               expected.logits.numpy()[real], atol=TOLERANCE, rtol=0)
    encoder = build_transformer_model(path / "config.json", path, model=model,
                                      application="encoder", allow_unused=True)
    assert_unpadded_close(encoder.predict(sources, verbose=0),
                          expected.encoder_last_hidden_state.numpy(), sources)


def test_t5_output_head_of_its_own(tmp_path):
    """T5.1.1 and mT5 releases store lm_head apart from the token embedding (their configs say
    tie_word_embeddings: false); transformers 5 ties it on load, so the file is made by hand."""
    import json

    from safetensors.numpy import load_file, save_file

    reference = hf_t5("mt5", seed=17, **T5_SHAPE)
    path = save_hf(reference, tmp_path)
    tensors = load_file(path / "model.safetensors")
    head = np.random.default_rng(17).normal(0, 0.2, (97, 32)).astype("float32")
    save_file({**tensors, "lm_head.weight": head}, path / "model.safetensors")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(dict(config, tie_word_embeddings=False)))
    sources, targets, real = t5_batch(17)
    hidden = hf_seq2seq(reference, sources, targets).decoder_hidden_states[-1].numpy()
    model = build_transformer_model(path / "config.json", path, model="mt5.1.1",
                                    with_mlm="linear")
    np.testing.assert_allclose(model.predict([sources, targets], verbose=0)[real],
                               (hidden @ head.T)[real], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("family,model", [("t5", "t5"), ("mt5", "mt5.1.1")])
@pytest.mark.parametrize("use_cache", [True, False])
def test_t5_greedy_and_beam_search_equal_hf_generate(family, model, use_cache, tmp_path):
    import torch
    from bert4x.generation import AutoRegressiveDecoder

    shape = dict(T5_SHAPE, num_decoder_layers=2)  # HF's generation cache needs equal depths
    reference = hf_t5(family, seed=18, **shape)
    path = save_hf(reference, tmp_path)
    decoder = AutoRegressiveDecoder(build_transformer_model(path / "config.json", path,
                                                            model=model),
                                    end_id=None, max_new_tokens=16, use_cache=use_cache)
    source = [5, 8, 13, 2, 40, 41, 9, 22, 60, 3]
    options = dict(max_new_tokens=16, do_sample=False, suppress_tokens=[0])
    with torch.no_grad():
        greedy = reference.generate(torch.tensor([source]), **options)[0, 1:]
        beams = reference.generate(torch.tensor([source]), num_beams=3, num_return_sequences=3,
                                   length_penalty=0.0, output_scores=True,
                                   return_dict_in_generate=True, **options)
    assert decoder.greedy(source).tokens == greedy.tolist()
    ours = decoder.beam_search(source, beam_size=3)
    assert [h.tokens for h in ours] == beams.sequences[:, 1:].tolist()
    np.testing.assert_allclose([h.score for h in ours], beams.sequences_scores.numpy(),
                               rtol=1e-5)


@pytest.mark.parametrize("model,auto_class", [("t5", "T5ForConditionalGeneration"),
                                              ("mt5.1.1", "MT5ForConditionalGeneration")])
def test_t5_export_round_trip_through_transformers(model, auto_class, tmp_path):
    import transformers

    config = dict(T5_SHAPE, tie_word_embeddings=True)
    built = build_transformer_model(config, model=model, with_mlm="linear",
                                    return_keras_model=False)
    randomise(built, seed=19)
    built.export_huggingface(tmp_path)
    reference = getattr(transformers, auto_class).from_pretrained(tmp_path).eval()
    sources, targets, real = t5_batch(19)
    np.testing.assert_allclose(built.model.predict([sources, targets], verbose=0)[real],
                               hf_seq2seq(reference, sources, targets).logits.numpy()[real],
                               atol=TOLERANCE, rtol=0)


def test_openai_gpt_logits_with_padding(tmp_path):
    """``model="gpt"`` from HF's OpenAIGPT files: post-norm blocks, fused query/key/value."""
    import torch
    import transformers

    torch.manual_seed(20)
    reference = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(
        vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0))
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            parameter.normal_(0.0, 0.2)
            if ".ln_" in name and name.endswith("weight"):
                parameter.add_(1.0)
    path = save_hf(reference.eval(), tmp_path)
    token_ids, _ = random_batch(97, LENGTHS, seed=20)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(token_ids, dtype=torch.long),
                             attention_mask=torch.tensor(token_ids != 0)).logits.numpy()
    model = build_transformer_model(path / "config.json", path, model="gpt", with_mlm="linear")
    assert_unpadded_close(model.predict([token_ids, np.zeros_like(token_ids)], verbose=0),
                          expected, token_ids)
