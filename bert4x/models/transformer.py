"""Model families as small builder classes: each overrides only the step where it differs.

A builder turns a :class:`TransformerConfig` into a functional ``keras.Model`` whose layers carry
stable names (``Embedding-Token``, ``Transformer-3-FeedForward``...).  Those names, joined with the
sub-layer and variable names, are the weight paths that :mod:`bert4x.checkpoints` maps onto
Google and HF checkpoint names.

A builder also runs the *same* layers step by step for incremental decoding
(:meth:`Transformer.decode_step`): every attention layer reads and extends a key/value cache, so
generating a token costs one position. Layers are created through :meth:`Transformer.make`, which
hands back the trained model's layer of that name during a decoding step.
"""

from __future__ import annotations

import keras

from bert4x.config import GAU_FAMILIES, TransformerConfig
from bert4x.initializers import DepthScaled, DimensionAveraged
from bert4x.layers.rotary import ntk_scaled_base
from bert4x.layers import activations
from bert4x.layers import (
    APPLICATIONS, AttentionMask, BiasAdd, EmbeddingSum, FeedForward, GatedAttentionUnit,
    LayerNormalization, MultiHeadAttention, Pooler, PositionEmbedding,
    RelativePositionBias, RelativePositionEmbedding, TokenEmbedding,
)


class Transformer:
    """BERT: learned absolute positions, post-LayerNorm encoder, pooler and tied MLM head.

    The research options of the config (``rope``, ``attention_scale``, ``talking_heads``,
    ``residual_attention_scores``) apply to every family; with ``rope="2d"`` the model takes a
    third input, ``Input-Position``: an (x, y) pair per token.

    ``with_mlm=True`` outputs token probabilities; ``with_mlm="linear"`` outputs logits (any
    Keras activation name is accepted).  Outputs follow bert4keras: the sequence output alone, or
    the pooled output and/or MLM output when those heads are requested; every intermediate
    tensor stays reachable through ``model.get_layer(name).output``.

    With ``padding_mask`` (the default) the sequence and MLM outputs carry Keras' padding mask
    (token id 0 is padding), as bert4keras' models do: layers such as ``GlobalPointer`` and the
    CRF, and loss code that reads ``mask``, then skip padding. Keras also applies that mask to
    a compiled loss, averaging over real tokens only; a model whose loss weights positions
    itself is built with ``padding_mask=False``.

    ``norm_condition`` (a Keras tensor [batch, c], e.g. a class embedding) makes every norm a
    conditional layer norm whose gamma and beta are shifted by projections of it (through a
    ``condition_hidden_units`` dense layer first, if given); the inputs it comes from go in
    ``extra_inputs``, which the model takes after its own.

    ``prefix`` goes before every layer and input name (``Predecessor-Embedding-Token``), so two
    models can live in one Keras graph; checkpoints load and export without it.

    ``decode_step(model, ...)`` runs the same layers incrementally; see its docstring.
    """

    model_name = "bert"
    #: The ``application`` build_transformer_model gives the family when none is asked for,
    #: and those the family can build.
    default_application = "encoder"
    applications = APPLICATIONS
    #: Whether the output head may be a layer of its own (``tie_word_embeddings=false``).
    unties_output = False
    #: HF transformers' prefix for this family (``bert.encoder...``); None when HF has no model.
    hf_prefix = "bert"
    supports_pool = True
    use_bias = True
    use_rope = False
    #: Learned absolute positions added to the embeddings (BERT's); rotary or relative
    #: families have none.
    absolute_positions = True
    default_attention_scale = "sqrt"

    def __init__(self, config: TransformerConfig, application="encoder", with_pool=False,
                 with_mlm=False, name=None, padding_mask=True, norm_condition=None,
                 condition_hidden_units=None, condition_hidden_activation="linear",
                 extra_inputs=(), prefix=""):
        if application not in self.applications:
            raise ValueError(f"model={self.model_name!r}: application must be one of "
                             f"{self.applications}, got {application!r}")
        if not config.tie_word_embeddings and not self.unties_output:
            raise ValueError(f"model={self.model_name!r} ties its output to the token "
                             "embedding; tie_word_embeddings=false is a T5 option")
        if with_pool and not self.supports_pool:
            raise ValueError(f"model={self.model_name!r} has no pooler; use with_pool=False")
        if application != "encoder" and not with_mlm:
            raise ValueError(f"application={application!r} predicts tokens: set with_mlm=True")
        if config.chunk_size is not None and self.model_name not in GAU_FAMILIES:
            raise ValueError(f"chunk_size is a FLASH option; model={self.model_name!r} has none")
        self.config = config
        stretched = (config.rope_base, config.rope_ntk_factor) != (10000.0, 1.0)
        if stretched and self.rope is None:
            raise ValueError(f"rope_base and rope_ntk_factor set RoPE's frequencies; "
                             f"model={self.model_name!r} is built without RoPE (set rope='1d')")
        self.application = application
        self.with_pool = with_pool
        self.with_mlm = with_mlm
        self.padding_mask = padding_mask
        self.norm_condition = norm_condition
        self.condition_options = dict(condition_hidden_units=condition_hidden_units,
                                      condition_hidden_activation=condition_hidden_activation)
        self.extra_inputs = list(extra_inputs)
        self.prefix = prefix
        self.name = name or self.model_name
        self._reset()

    def _reset(self, reuse=None, cache=None):
        """Per-build state: the model whose layers are reused, the decoding cache, and tensors
        threaded from layer to layer."""
        self.reuse = reuse
        self.cache = cache
        self.token_embedding = None
        self.positions = None
        self.previous_scores = None
        self.relative_positions = None

    @property
    def attention_scale(self):
        """The config's ``attention_scale`` override, or the family's own choice."""
        if self.config.attention_scale == "auto":
            return self.default_attention_scale
        return self.config.attention_scale

    @property
    def rope(self):
        """The config's ``rope`` override, or the family's own choice."""
        if self.config.rope == "auto":
            return "1d" if self.use_rope else None
        return self.config.rope

    @property
    def rotary_size(self):
        """How many dimensions one RoPE rotation spans: the key size, half of it for 2D RoPE."""
        return self.config.attention_key_size // (2 if self.rope == "2d" else 1)

    @property
    def rope_base(self):
        """RoPE's base after the config's NTK-aware stretch."""
        return ntk_scaled_base(self.config.rope_base, self.config.rope_ntk_factor,
                               self.rotary_size)

    @property
    def length_options(self):
        """The attention layers' arguments for length extrapolation."""
        return dict(rope_base=self.rope_base, scale_length=self.config.attention_scale_length)

    # Pieces shared by the families -----------------------------------------------------------
    @property
    def initializer(self):
        """Kernels' initializer: the config's ``initializer`` option, or the family's own
        truncated normal of ``initializer_range`` ("auto")."""
        choice = self.config.initializer
        if choice == "xavier":
            return keras.initializers.GlorotUniform()
        if choice == "dimension_averaged":
            return DimensionAveraged()
        if choice == "depth_scaled":
            return DepthScaled(self.config.num_hidden_layers)
        return keras.initializers.TruncatedNormal(stddev=self.config.initializer_range)

    @property
    def embeddings_initializer(self):
        """Embedding tables: a lookup reads one row and sums nothing, so the fan rules of
        kernels do not fit them. Only RoFormer-V2's depth-scaled rule, which has its own fan
        rule for tables, covers them, as in bert4keras."""
        if self.config.initializer == "depth_scaled":
            return self.initializer
        return keras.initializers.TruncatedNormal(stddev=self.config.initializer_range)

    def make(self, layer_class, name, **kwargs):
        """A new layer, or, during a decoding step, the trained model's layer of that name."""
        if self.reuse is not None:
            return self.reuse.get_layer(self.prefix + name)
        return layer_class(name=self.prefix + name, **kwargs)

    def dropout(self, x, name):
        rate = self.config.hidden_dropout_prob
        return self.make(keras.layers.Dropout, name, rate=rate)(x) if rate else x

    def norm(self, x, name):
        if self.norm_condition is None:
            return self.make(LayerNormalization, name, epsilon=self.config.layer_norm_eps)(x)
        return self.make(LayerNormalization, name, epsilon=self.config.layer_norm_eps,
                         conditional=True, **self.condition_options)([x, self.norm_condition])

    def dense(self, x, units, name, activation=None, use_bias=True, dtype=None):
        """``dtype`` None: the global policy's."""
        return self.make(keras.layers.Dense, name, units=units,
                         activation=activations.get(activation), use_bias=use_bias,
                         kernel_initializer=self.initializer, dtype=dtype)(x)

    def attend(self, layer, x, mask, index, **kwargs):
        """Call an attention-like layer; in a decoding step, through layer ``index``'s cache."""
        if self.cache is None:
            return layer(x, attention_mask=mask, positions=self.positions, **kwargs)
        *outputs, keys, values = layer(x, attention_mask=mask, **self.cache.layer_inputs(index),
                                       **kwargs)
        self.cache.updated.append((keys, values))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    # The model ---------------------------------------------------------------------------------
    def build(self) -> keras.Model:
        self._reset()
        token_ids = self.token_ids = keras.Input(shape=(None,), dtype="int32",
                                                 name=self.prefix + "Input-Token")
        segment_ids = keras.Input(shape=(None,), dtype="int32", name=self.prefix + "Input-Segment")
        inputs = [token_ids, segment_ids]
        if self.rope == "2d":
            self.positions = keras.Input(shape=(None, 2), dtype="float32",
                                         name=self.prefix + "Input-Position")
            inputs.append(self.positions)
        inputs.extend(self.extra_inputs)
        mask = AttentionMask(self.application, name=self.prefix + "Attention-Mask")(
            [token_ids, segment_ids])
        x = self.apply_embeddings(token_ids, segment_ids)
        x = self.apply_layers(x, mask)
        outputs = self.apply_heads(x) or [x]
        return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=self.name)

    @property
    def hf_head(self) -> str:
        """Which HF class an export is for: the bare model's or the MLM one's."""
        return "mlm" if self.with_mlm else "model"

    def apply_heads(self, x) -> list:
        """The outputs of the requested heads, in bert4keras' order; none: the sequence."""
        outputs = []
        if self.with_pool:
            outputs.append(self.apply_pooler(x))
        if self.with_mlm:
            outputs.append(self.apply_mlm(x))
        return outputs

    def apply_layers(self, x, mask):
        for index in range(self.config.num_hidden_layers):
            x = self.apply_layer(x, mask, index)
        return x

    def cache_shapes(self):
        """Per-row shapes of one layer's cached keys and values, ``None`` where the slots go
        (:meth:`MultiHeadAttention.cache_shapes`)."""
        cfg = self.config
        return ((cfg.num_attention_heads, None, cfg.attention_key_size),
                (cfg.num_attention_heads, None, cfg.attention_head_size))

    def check_decodable(self):
        """Refuse, with the reason, models that :meth:`decode_step` cannot run."""
        if not self.with_mlm:
            raise ValueError("incremental decoding predicts tokens: build the model with with_mlm")
        if self.rope == "2d":
            raise ValueError("2D RoPE positions are for images; decoding supports 1D positions")
        if self.config.chunk_size is not None:
            raise ValueError("FLASH mixed-chunk attention has no incremental decoding; "
                             "build the decoder's model without chunk_size")
        if self.norm_condition is not None:
            raise ValueError("a model with conditional norms has no incremental decoding; "
                             "decode with use_cache=False")

    def decode_step(self, model: keras.Model, token_ids, segment_ids, positions, mask, keys,
                    values, index, *source):
        """Run ``model``'s own layers (shared weights) on new tokens through a key/value cache.

        ``token_ids``, ``segment_ids``, ``positions``: [batch, n] for the new tokens only;
        ``mask``: bool [batch, 1, n, max_len] over the cache slots; ``keys`` / ``values``: one
        [batch, ...] tensor per layer with max_len slots (see :meth:`cache_shapes`), kept apart
        because slicing one stacked tensor and stacking it back copied the whole cache twice a
        step; ``index``: the slot of the first new token. Returns the last new token's MLM
        logits and the updated caches, as tuples per layer. The caller owns the mask, so one
        step serves ``lm`` and ``unilm`` alike. This runs on tensors, not as a functional model:
        Keras' graph check cannot follow a layer whose outputs change shape between calls, as
        the cached attention's do. ``source``: what an encoder-decoder's step also reads (see
        :meth:`T5.step_hidden`).
        """
        self.check_decodable()
        self._reset(reuse=model, cache=StepCache(keys, values, index, positions,
                                                 slots=keras.ops.shape(mask)[-1]))
        try:
            x = self.step_hidden(token_ids, segment_ids, mask, *source)
            logits = self.apply_mlm(x[:, -1:])  # only the last token's prediction is needed
            new_keys, new_values = zip(*self.cache.updated)
        finally:
            self._reset()
        return logits, new_keys, new_values

    def step_hidden(self, token_ids, segment_ids, mask):
        """The last hidden states of the new tokens in a decoding step."""
        return self.apply_layers(self.apply_embeddings(token_ids, segment_ids), mask)

    def embed_tokens(self, token_ids, segment_ids):
        cfg = self.config
        self.token_embedding = self.make(
            TokenEmbedding, "Embedding-Token", input_dim=cfg.vocab_size,
            output_dim=cfg.embedding_dim, embeddings_initializer=self.embeddings_initializer,
            mask_zero=self.padding_mask)
        x = self.token_embedding(token_ids)
        if cfg.type_vocab_size:
            s = self.make(TokenEmbedding, "Embedding-Segment", input_dim=cfg.type_vocab_size,
                          output_dim=cfg.embedding_dim,
                          embeddings_initializer=self.embeddings_initializer)(segment_ids)
            x = self.make(EmbeddingSum, "Embedding-Token-Segment")([x, s])
        return x

    def apply_embeddings(self, token_ids, segment_ids):
        x = self.embed_tokens(token_ids, segment_ids)
        if self.absolute_positions:
            x = self.add_positions(x)
        x = self.norm(x, "Embedding-Norm")
        x = self.dropout(x, "Embedding-Dropout")
        return self.map_embeddings(x)

    def add_positions(self, x):
        """Learned absolute positions; in a decoding step, those of the new tokens."""
        cfg = self.config
        return self.make(PositionEmbedding, "Embedding-Position",
                         input_dim=cfg.max_position_embeddings, output_dim=cfg.embedding_dim,
                         embeddings_initializer=self.embeddings_initializer,
                         )(x, positions=None if self.cache is None else self.cache.positions)

    def map_embeddings(self, x):
        if self.config.embedding_dim != self.config.hidden_size:
            x = self.dense(x, self.config.hidden_size, "Embedding-Mapping", use_bias=self.use_bias)
        return x

    def block_name(self, index, part):
        """The name of a part of block ``index``; a family sharing one block across layers
        leaves the index out."""
        return f"Transformer-{index}-{part}"

    def apply_layer(self, x, mask, index):
        """Post-norm block: x = Norm(x + Attention(x)); x = Norm(x + FFN(x))."""
        x = self.residual(x, self.self_attention(x, mask, index),
                          self.block_name(index, "MultiHeadSelfAttention"))
        return self.residual(x, self.feed_forward(x, index), self.block_name(index, "FeedForward"))

    def self_attention(self, x, mask, index):
        cfg = self.config
        layer = self.make(
            MultiHeadAttention, self.block_name(index, "MultiHeadSelfAttention"),
            heads=cfg.num_attention_heads, head_size=cfg.attention_head_size,
            key_size=cfg.attention_key_size, out_dim=cfg.hidden_size, use_bias=self.use_bias,
            attention_dropout=cfg.attention_probs_dropout_prob, rope=self.rope,
            attention_scale=self.attention_scale, talking_heads=cfg.talking_heads,
            residual_scores=cfg.residual_attention_scores, kernel_initializer=self.initializer,
            **self.length_options)
        y = self.attend(layer, x, mask, index, previous_scores=self.previous_scores,
                        relative_positions=self.relative_positions)
        if cfg.residual_attention_scores:  # RealFormer: the next layer adds these scores
            y, self.previous_scores = y
        return y

    def feed_forward(self, x, index):
        cfg = self.config
        return self.make(FeedForward, self.block_name(index, "FeedForward"),
                         units=cfg.intermediate_size, activation=cfg.activation,
                         use_bias=self.use_bias, kernel_initializer=self.initializer)(x)

    def pre_norm(self, x, name, sublayer):
        """Pre-norm residual: ``x + Dropout(sublayer(Norm(x)))``, layers named after ``name``."""
        y = self.dropout(sublayer(self.norm(x, f"{name}-Norm")), f"{name}-Dropout")
        return self.make(keras.layers.Add, f"{name}-Add")([x, y])

    def residual(self, x, y, name):
        y = self.dropout(y, f"{name}-Dropout")
        x = self.make(keras.layers.Add, f"{name}-Add")([x, y])
        return self.norm(x, f"{name}-Norm")

    def apply_pooler(self, x):
        return Pooler(self.config.hidden_size, kernel_initializer=self.initializer,
                      name=self.prefix + "Pooler")(x)

    #: The MLM transform's activation; None: the config's ``hidden_act``.
    mlm_transform_activation = None

    def apply_mlm(self, x):
        x = self.dense(x, self.config.embedding_dim, "MLM-Dense",
                       activation=self.mlm_transform_activation or self.config.activation)
        x = self.norm(x, "MLM-Norm")
        x = self.token_embedding(x, reverse=True)
        x = self.make(BiasAdd, "MLM-Bias", dtype="float32")(x)  # logits stay float32 (above)
        return self.mlm_activation(x)

    def mlm_activation(self, logits):
        """The requested output activation; a decoding step always returns logits."""
        if self.cache is not None:
            return logits
        activation = "softmax" if self.with_mlm is True else self.with_mlm
        return keras.layers.Activation(activation, dtype="float32",
                                       name=self.prefix + "MLM-Activation")(logits)


class RoFormer(Transformer):
    """RoFormer v1: BERT with rotary positions in every attention and no absolute positions."""

    model_name = "roformer"
    hf_prefix = "roformer"
    use_rope = True
    absolute_positions = False


class Nezha(Transformer):
    """NEZHA: BERT whose positions are functional relative ones (see
    :class:`~bert4x.layers.RelativePositionEmbedding`), added in every attention to the keys
    and the values, clipped at the config's ``max_relative_position`` (64 in the releases); no
    absolute positions. The relative table is computed, so checkpoints hold BERT's weights
    less the position table."""

    model_name = "nezha"
    hf_prefix = "nezha"
    absolute_positions = False

    def __init__(self, config: TransformerConfig, **kwargs):
        if config.attention_key_size != config.attention_head_size:
            raise ValueError("model='nezha' adds relative positions to keys and values alike: "
                             "key_size must equal head_size")
        super().__init__(config, **kwargs)

    def apply_layers(self, x, mask):
        cfg = self.config
        layer = self.make(RelativePositionEmbedding, "Embedding-Relative-Position",
                          max_distance=cfg.max_relative_position,
                          output_dim=cfg.attention_key_size)
        if self.cache is None:
            self.relative_positions = layer(x)
        else:  # the new tokens against every slot of the cache
            self.relative_positions = layer(x, positions=self.cache.positions,
                                            key_length=self.cache.slots)
        return super().apply_layers(x, mask)


class RoFormerV2(RoFormer):
    """RoFormer-V2: no biases, parameter-free RMS-style norms, relu FFN, bare tied MLM output.

    As in the original release the embedding dropout comes before the embedding norm, and the MLM
    head is only an optional mapping back to the embedding size followed by the tied embedding.
    """

    model_name = "roformer_v2"
    hf_prefix = None
    supports_pool = False
    use_bias = False

    def __init__(self, config: TransformerConfig, **kwargs):
        if kwargs.get("norm_condition") is not None:
            raise ValueError(f"model={self.model_name!r} has parameter-free norms, which a "
                             "condition cannot shift; use model='roformer' or 'bert'")
        super().__init__(config, **kwargs)

    def norm(self, x, name):
        return self.make(LayerNormalization, name, epsilon=self.config.layer_norm_eps,
                         center=False, scale=False, zero_mean=False)(x)

    def apply_embeddings(self, token_ids, segment_ids):
        x = self.embed_tokens(token_ids, segment_ids)
        x = self.dropout(x, "Embedding-Dropout")
        x = self.norm(x, "Embedding-Norm")
        return self.map_embeddings(x)

    def apply_mlm(self, x):
        if self.config.embedding_dim != self.config.hidden_size:
            x = self.dense(x, self.config.embedding_dim, "Output-Mapping", use_bias=False)
        x = self.dropout(x, "Output-MLM-Dropout")
        return self.mlm_activation(self.token_embedding(x, reverse=True))


class GAUAlpha(RoFormerV2):
    """GAU-α: RoFormer-V2 whose blocks are single gated attention units, post-norm.

    Each block is ``x = Norm(x + Dropout(GAU(x)))`` with softmax attention under the
    entropy-invariant scale ("softmax_plus"), RoPE on Q/K, swish, no biases; ``intermediate_size``
    is the unit's e, ``key_size`` its s (128 unless given). Units use Xavier (Glorot) init: with
    post-norm it makes each unit start far smaller than its input, so no warmup is needed.
    """

    model_name = "gau_alpha"
    default_attention_scale = "entropy_invariant"
    normalization = "softmax"

    def __init__(self, config: TransformerConfig, **kwargs):
        for option in ("talking_heads", "residual_attention_scores"):
            if getattr(config, option):
                raise ValueError(f"{option} is a multi-head attention option; "
                                 f"model={self.model_name!r} is built from gated attention units")
        if config.rope not in ("auto", "1d", None):
            raise ValueError(f"model={self.model_name!r} supports rope='1d' or None, "
                             f"got {config.rope!r}")
        super().__init__(config, **kwargs)

    def gated_attention_unit(self, index, **options):
        cfg = self.config
        return self.make(
            GatedAttentionUnit, self.block_name(index, "GatedAttentionUnit"),
            units=cfg.intermediate_size, key_size=cfg.key_size or 128,
            activation=cfg.activation, use_bias=self.use_bias, normalization=self.normalization,
            attention_scale=self.attention_scale, rope=self.rope == "1d",
            attention_dropout=cfg.attention_probs_dropout_prob, **self.unit_initializer,
            **self.length_options, **options)

    @property
    def rotary_size(self):
        return self.config.key_size or 128

    @property
    def unit_initializer(self):
        """Units keep their own Xavier init unless an ``initializer`` option is chosen."""
        if self.config.initializer == "auto":
            return {}
        return {"kernel_initializer": self.initializer}

    def cache_shapes(self):
        return (None, self.config.key_size or 128), (None, self.config.intermediate_size)

    def apply_layer(self, x, mask, index):
        y = self.attend(self.gated_attention_unit(index), x, mask, index)
        return self.residual(x, y, self.block_name(index, "GatedAttentionUnit"))


class Flash(GAUAlpha):
    """FLASH: the GAU stack with relu² attention and biases; with ``chunk_size`` each unit uses
    mixed-chunk attention (quadratic within chunks, linear across them), so cost grows linearly
    with length. Mixed-chunk attention knows padding and causality only: ``application`` is
    ``"encoder"`` or ``"lm"``."""

    model_name = "flash"
    default_attention_scale = "sqrt"
    normalization = "relu2"
    use_bias = True

    def __init__(self, config: TransformerConfig, application="encoder", **kwargs):
        if config.chunk_size is not None and application == "unilm":
            raise ValueError("FLASH mixed-chunk attention supports application='encoder' or "
                             "'lm', not 'unilm'; leave chunk_size unset for UniLM")
        super().__init__(config, application=application, **kwargs)

    def apply_layer(self, x, mask, index):
        if self.config.chunk_size is None:
            return super().apply_layer(x, mask, index)
        unit = self.gated_attention_unit(index, chunk_size=self.config.chunk_size,
                                         causal=self.application == "lm")
        y = unit(x, key_mask=keras.ops.not_equal(self.token_ids, 0))
        return self.residual(x, y, self.block_name(index, "GatedAttentionUnit"))


class AlbertUnshared(Transformer):
    """ALBERT's checkpoints as a BERT with one block per layer, each loaded from ALBERT's
    shared block (bert4keras' ``albert_unshared``): the layers may then be fine-tuned apart.
    ALBERT always maps its factorised embeddings to the hidden size, even when they are equal."""

    model_name = "albert_unshared"
    hf_prefix = "albert"

    def map_embeddings(self, x):
        return self.dense(x, self.config.hidden_size, "Embedding-Mapping")


class Albert(AlbertUnshared):
    """ALBERT: factorised embeddings and one Transformer block whose weights every layer
    shares (``Transformer-MultiHeadSelfAttention``, no layer index), as in the release.

    A shared layer is called once per block, so ``model.get_layer(name).output`` is the
    *first* block's output; the last block's is the output of the model built without heads."""

    model_name = "albert"

    def _reset(self, reuse=None, cache=None):
        super()._reset(reuse, cache)
        self.shared_layers = {}

    def block_name(self, index, part):
        return f"Transformer-{part}"

    def make(self, layer_class, name, **kwargs):
        """The first layer of each name; later layers of that name are the same layer."""
        if name not in self.shared_layers:
            self.shared_layers[name] = super().make(layer_class, name, **kwargs)
        return self.shared_layers[name]


class Electra(Transformer):
    """ELECTRA: BERT's encoder without a pooler. ``with_discriminator=True`` adds the
    discriminator's head (for each token, the probability it was replaced; any Keras activation
    name gives that output instead, ``"linear"`` the logits); ``with_mlm`` adds the generator's
    MLM head, BERT's with a fixed GELU. Generator and discriminator are separate models, each
    built from its own config, as they are released."""

    model_name = "electra"
    hf_prefix = "electra"
    supports_pool = False
    applications = ("encoder",)  # as bert4keras: neither half is a language model
    mlm_transform_activation = "gelu"

    def __init__(self, config: TransformerConfig, with_discriminator=False, **kwargs):
        if with_discriminator and kwargs.get("with_mlm"):
            raise ValueError("ELECTRA's generator (with_mlm) and discriminator "
                             "(with_discriminator) are separate models; build one of each")
        self.with_discriminator = with_discriminator
        super().__init__(config, **kwargs)

    @property
    def hf_head(self) -> str:
        return "discriminator" if self.with_discriminator else super().hf_head

    def apply_heads(self, x) -> list:
        if not self.with_discriminator:
            return super().apply_heads(x)
        activation = "sigmoid" if self.with_discriminator is True else self.with_discriminator
        x = self.dense(x, self.config.hidden_size, "Discriminator-Dense",
                       activation=self.config.activation)
        return [self.dense(x, 1, "Discriminator-Prediction", activation=activation)]


class GPT(Transformer):
    """OpenAI's GPT: BERT's post-norm blocks under a causal mask, token + segment + position
    embeddings with no norm, and the token embedding as output projection (no transform, no
    bias). Causal only. Loads bert4keras' TF format (CDial-GPT's release) and HF's
    ``OpenAIGPT`` files (``config.json`` in GPT's names, no segments)."""

    model_name = "gpt"
    hf_prefix = "transformer"
    supports_pool = False
    default_application = "lm"
    applications = ("lm",)
    has_segments = True

    def __init__(self, config: TransformerConfig, **kwargs):
        if config.type_vocab_size and not self.has_segments:
            raise ValueError(f"model={self.model_name!r} has no segment embedding; set "
                             "type_vocab_size=0")
        super().__init__(config, **kwargs)

    def apply_embeddings(self, token_ids, segment_ids):
        x = self.add_positions(self.embed_tokens(token_ids, segment_ids))
        return self.map_embeddings(self.dropout(x, "Embedding-Dropout"))

    def apply_mlm(self, x):
        return self.mlm_activation(self.token_embedding(x, reverse=True))


class GPT2(GPT):
    """GPT-2: a causal language model with learned positions, pre-norm blocks
    (``x + Attention(Norm(x))``, ``x + FFN(Norm(x))``), a final norm (``Output-Norm``) and the
    token embedding as its output projection, without bias.

    GPT-2 has no segment embedding (``type_vocab_size`` 0): the model takes
    ``[token_ids, segment_ids]`` like every bert4x model and ignores the segments, so the
    decoders and training loop serve it unchanged. Token id 0 is padding, as in the Chinese
    GPT-2 releases, whose BERT vocabularies start with ``[PAD]``.
    """

    model_name = "gpt2"
    hf_prefix = "transformer"
    has_segments = False

    def apply_layers(self, x, mask):
        return self.norm(super().apply_layers(x, mask), "Output-Norm")

    def apply_layer(self, x, mask, index):
        """Pre-norm block: x = x + Attention(Norm(x)); x = x + FFN(Norm(x))."""
        x = self.pre_norm(x, self.block_name(index, "MultiHeadSelfAttention"),
                          lambda y: self.self_attention(y, mask, index))
        return self.pre_norm(x, self.block_name(index, "FeedForward"),
                             lambda y: self.feed_forward(y, index))


class GPT2ML(GPT):
    """GPT2-ML (imcaspar/gpt2-ml, the 1.5B Chinese model), which bert4keras notes is closer to
    GPT than to GPT-2: token + position embeddings then a norm; in each block the attention is
    added with no norm around it, and the feed-forward has a norm before and after
    (``FeedForward-Norm-0``/``-1``). No segments, no final norm."""

    model_name = "gpt2_ml"
    hf_prefix = None
    has_segments = False

    def apply_embeddings(self, token_ids, segment_ids):
        x = self.add_positions(self.embed_tokens(token_ids, segment_ids))
        x = self.norm(x, "Embedding-Norm")
        return self.map_embeddings(self.dropout(x, "Embedding-Dropout"))

    def apply_layer(self, x, mask, index):
        attention = self.block_name(index, "MultiHeadSelfAttention")
        y = self.dropout(self.self_attention(x, mask, index), f"{attention}-Dropout")
        x = self.make(keras.layers.Add, f"{attention}-Add")([x, y])
        feed_forward = self.block_name(index, "FeedForward")
        y = self.feed_forward(self.norm(x, f"{feed_forward}-Norm-0"), index)
        x = self.make(keras.layers.Add, f"{feed_forward}-Add")(
            [x, self.dropout(y, f"{feed_forward}-Dropout")])
        return self.norm(x, f"{feed_forward}-Norm-1")


class T5(Transformer):
    """T5 (``t5``: T5.1.0; ``t5.1.1`` and ``mt5.1.1``: the gated-GELU, untied-head versions
    their configs describe): an encoder and a decoder of pre-norm blocks with RMS norms (scale
    only), no biases, unscaled attention logits plus a learned relative bias per head (computed
    in each stack's first layer and shared by its others), and cross-attention from the
    decoder to the encoder. One token embedding serves both stacks.

    ``application="seq2seq"`` (the default) takes ``[encoder_token_ids, decoder_token_ids]``
    and outputs the decoder's token probabilities (``with_mlm="linear"``: logits);
    ``application="encoder"`` is the encoder alone (HF's ``T5EncoderModel``). Layer names follow
    bert4keras' T5 (``Encoder-Transformer-0-MultiHeadSelfAttention``,
    ``Decoder-Transformer-0-MultiHeadCrossAttention``, ``Decoder-Output-LM``). Token id 0 is
    padding in the encoder; the decoder starts from id 0, so its mask is causal only.
    """

    model_name = "t5"
    hf_prefix = ""  # HF's T5 names carry no family prefix: ``encoder.block.0...``
    supports_pool = False
    use_bias = False
    default_attention_scale = "none"
    default_application = "seq2seq"
    applications = ("seq2seq", "encoder")
    unties_output = True
    #: The decoder's first input: T5 starts from its padding id.
    decoder_start_id = 0

    def __init__(self, config: TransformerConfig, application="seq2seq", **kwargs):
        for option in ("talking_heads", "residual_attention_scores"):
            if getattr(config, option):
                raise ValueError(f"{option} is not a T5 option")
        if config.rope not in ("auto", None) or config.embedding_dim != config.hidden_size:
            raise ValueError("T5's positions are its relative bias and its embeddings have the "
                             "hidden size: rope and embedding_size are not T5 options")
        super().__init__(config, application=application, **kwargs)
        if self.norm_condition is not None:
            raise ValueError("conditional norms are not a T5 option")
        self.stack = "Encoder"

    def block_name(self, index, part):
        return f"{self.stack}-Transformer-{index}-{part}"

    def norm(self, x, name):
        return self.make(LayerNormalization, name, epsilon=self.config.layer_norm_eps,
                         center=False, zero_mean=False)(x)

    def feed_forward(self, x, index):
        cfg = self.config
        return self.make(FeedForward, self.block_name(index, "FeedForward"),
                         units=cfg.intermediate_size, activation=cfg.activation,
                         use_bias=False, gated=cfg.gated_feed_forward,
                         kernel_initializer=self.initializer)(x)

    def attention(self, part, index):
        cfg = self.config
        return self.make(MultiHeadAttention, self.block_name(index, part),
                         heads=cfg.num_attention_heads, head_size=cfg.attention_head_size,
                         key_size=cfg.attention_key_size, out_dim=cfg.hidden_size,
                         use_bias=False, attention_dropout=cfg.attention_probs_dropout_prob,
                         attention_scale=self.attention_scale,
                         kernel_initializer=self.initializer, **self.length_options)

    def relative_bias(self, bidirectional):
        cfg = self.config
        return self.make(RelativePositionBias, f"{self.stack}-Embedding-Relative-Position",
                         heads=cfg.num_attention_heads,
                         num_buckets=cfg.relative_attention_num_buckets,
                         max_distance=cfg.relative_attention_max_distance,
                         bidirectional=bidirectional,
                         embeddings_initializer=self.embeddings_initializer)

    def build(self) -> keras.Model:
        self._reset()
        cfg = self.config
        encoder_ids = keras.Input(shape=(None,), dtype="int32",
                                  name=self.prefix + "Encoder-Input-Token")
        encoder_mask = self.make(AttentionMask, "Encoder-Attention-Mask", application="encoder")(
            [encoder_ids, encoder_ids])
        encoded = self.apply_encoder(encoder_ids, encoder_mask)
        # Decoding runs the encoder once per source, through this model of the same layers.
        self.encoder_model = keras.Model(encoder_ids, encoded, name=self.name)
        if self.application == "encoder":
            return self.encoder_model
        decoder_ids = keras.Input(shape=(None,), dtype="int32",
                                  name=self.prefix + "Decoder-Input-Token")
        decoder_mask = self.make(AttentionMask, "Decoder-Attention-Mask", application="lm",
                                 padding=False)([decoder_ids, decoder_ids])
        x = self.apply_decoder(decoder_ids, decoder_mask, encoded, encoder_mask)
        return keras.Model([encoder_ids, decoder_ids], self.apply_mlm(x), name=self.name)

    def embed(self, token_ids):
        """The token embedding both stacks share (and the tied output reuses)."""
        cfg = self.config
        if self.token_embedding is None:
            self.token_embedding = self.make(
                TokenEmbedding, "Embedding-Token", input_dim=cfg.vocab_size,
                output_dim=cfg.hidden_size, embeddings_initializer=self.embeddings_initializer)
        return self.token_embedding(token_ids)

    def apply_encoder(self, token_ids, mask):
        self.stack = "Encoder"
        x = self.dropout(self.embed(token_ids), "Encoder-Embedding-Dropout")
        bias = self.relative_bias(bidirectional=True)(x)
        for index in range(self.config.num_hidden_layers):
            x = self.pre_norm(x, self.block_name(index, "MultiHeadSelfAttention"),
                              lambda y: self.attention("MultiHeadSelfAttention", index)(
                                  y, attention_mask=mask, attention_bias=bias))
            x = self.pre_norm(x, self.block_name(index, "FeedForward"),
                              lambda y: self.feed_forward(y, index))
        return self.dropout(self.norm(x, "Encoder-Output-Norm"), "Encoder-Output-Dropout")

    def apply_decoder(self, token_ids, mask, encoded, encoder_mask):
        self.stack = "Decoder"
        x = self.dropout(self.embed(token_ids), "Decoder-Embedding-Dropout")
        self.decoder_bias = self.relative_bias(bidirectional=False)
        if self.cache is None:
            bias = self.decoder_bias(x)
        else:
            bias = self.decoder_bias(x, positions=self.cache.positions,
                                     key_length=self.cache.slots)
        for index in range(self.config.num_decoder_layers or self.config.num_hidden_layers):
            x = self.pre_norm(x, self.block_name(index, "MultiHeadSelfAttention"),
                              lambda y: self.attend(self.attention("MultiHeadSelfAttention", index),
                                                    y, mask, index, attention_bias=bias))
            x = self.pre_norm(x, self.block_name(index, "MultiHeadCrossAttention"),
                              lambda y: self.cross_attention(y, encoded, encoder_mask, index))
            x = self.pre_norm(x, self.block_name(index, "FeedForward"),
                              lambda y: self.feed_forward(y, index))
        return self.dropout(self.norm(x, "Decoder-Output-Norm"), "Decoder-Output-Dropout")

    def cross_attention(self, x, encoded, encoder_mask, index):
        layer = self.attention("MultiHeadCrossAttention", index)
        if self.cache is None:
            return layer(x, encoded, attention_mask=encoder_mask,
                         attention_bias=self.cross_bias(x, keys=encoded))
        # A decoding step: the source's keys and values were computed once (cross_cache).
        keys, values = self.cross_keys[index], self.cross_values[index]
        bias = self.cross_bias(x, positions=self.cache.positions,  # keys: heads first
                               key_length=keras.ops.shape(keys)[2])
        return layer(x, attention_mask=encoder_mask, key_value=(keys, values),
                     attention_bias=bias)

    def cross_bias(self, x, **where):
        """bert4keras' relative bias on the cross-attention (``cross_position_bias``): the
        decoder's own bias layer, between decoder and source positions; else none."""
        if not self.config.cross_position_bias:
            return None
        return self.decoder_bias(x, **where)

    # Decoding: the encoder reads the source once (cross_cache), then each step runs the
    # decoder on new tokens through the self-attention cache (decode_step).
    @property
    def decoder_layers(self) -> int:
        return self.config.num_decoder_layers or self.config.num_hidden_layers

    def check_decodable(self):
        if self.application != "seq2seq":
            raise ValueError("decoding needs the decoder: build T5 with application='seq2seq'")

    def cross_cache(self, model: keras.Model, source_ids):
        """The encoder's output for ``source_ids`` [1, n] as every decoder layer's
        cross-attention keys and values ([1, heads, n, size] per layer), and the source's
        padding mask."""
        encoded = self.encoder_model(source_ids)
        keys, values = zip(*(
            model.get_layer(f"{self.prefix}Decoder-Transformer-{i}-MultiHeadCrossAttention")
            .project_key_value(encoded) for i in range(self.decoder_layers)))
        source_mask = keras.ops.not_equal(source_ids, 0)[:, None, None, :]
        return keys, values, source_mask

    def step_hidden(self, token_ids, segment_ids, mask, cross_keys, cross_values, source_mask):
        """The decoder's step, attending to the source through ``cross_cache``'s keys and
        values."""
        self.cross_keys, self.cross_values = cross_keys, cross_values
        return self.apply_decoder(token_ids, mask, None, source_mask)

    def apply_mlm(self, x):
        cfg = self.config
        scale = cfg.scale_decoder_outputs
        if scale is None:  # T5.1.0 scales its tied output; T5.1.1 and mT5 do not
            scale = cfg.tie_word_embeddings and self.model_name == "t5"
        if scale:
            x = self.make(keras.layers.Rescaling, "Decoder-Output-Scale",
                          scale=cfg.hidden_size ** -0.5)(x)
        if cfg.tie_word_embeddings:
            return self.mlm_activation(self.token_embedding(x, reverse=True))
        # float32 logits, as the tied projection gives (TokenEmbedding says why)
        return self.mlm_activation(self.dense(x, cfg.vocab_size, "Decoder-Output-LM",
                                              use_bias=False, dtype="float32"))


class T511(T5):
    """T5.1.1: gated-GELU feed-forward and an output head of its own unless its config says
    otherwise (bert4keras' ``t5.1.1``)."""

    model_name = "t5.1.1"


class MT511(T5):
    """mT5 (bert4keras' ``mt5.1.1``): T5.1.1's structure with a multilingual vocabulary."""

    model_name = "mt5.1.1"


class StepCache:
    """The cache tensors a decoding step threads through its attention layers."""

    def __init__(self, keys, values, index, positions, slots):
        self.keys, self.values, self.index, self.positions = keys, values, index, positions
        self.slots = slots  # how many positions the cache holds, written or not
        self.updated = []

    def layer_inputs(self, layer):
        return dict(cache=(self.keys[layer], self.values[layer]), cache_index=self.index,
                    positions=self.positions)


MODELS = {cls.model_name: cls for cls in (Transformer, RoFormer, RoFormerV2, GAUAlpha, Flash,
                                          Albert, AlbertUnshared, Electra, GPT, GPT2, GPT2ML,
                                          Nezha, T5, T511, MT511)}
