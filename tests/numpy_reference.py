"""A direct NumPy transcription of the formulas in shared/specs.md, one example at a time.

It reads weights by their Google checkpoint names, so a test can write the same arrays to a TF
checkpoint, load that through bert4x and compare.  Each example is run on its unpadded tokens
only, so agreement also shows that padding does not leak into real positions.
"""

import numpy as np
from scipy.special import erf


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def layer_norm(x, weights, name, eps, centred):
    if centred:
        x = x - x.mean(-1, keepdims=True)
    x = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps)
    if name + "/gamma" in weights:
        x = x * weights[name + "/gamma"] + weights[name + "/beta"]
    return x


def rope(x, positions=None, base=10000.0):
    """Rotate each (2i, 2i+1) pair of x [n, heads, d] by position * base^(-2i/d), written as a
    complex multiplication, independently of bert4x's real-valued implementation."""
    n, _, d = x.shape
    positions = np.arange(n) if positions is None else positions
    theta = base ** (-np.arange(d // 2) * 2.0 / d)
    rotation = np.exp(1j * positions[:, None] * theta[None, :])[:, None, :]
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * rotation
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def rope_2d(x, positions):
    """2D RoPE: first half of each head rotated by the x coordinate, second half by y."""
    half = x.shape[-1] // 2
    return np.concatenate([rope(x[..., :half], positions[:, 0]),
                           rope(x[..., half:], positions[:, 1])], axis=-1)


def attention_probabilities(scores, allowed, options, layer):
    """Mask, optional talking-heads mixing and softmax for scores [heads, q, k]."""
    mixing = options.get("talking_heads")
    if mixing is not None:
        scores = np.einsum("hqk,hg->gqk", scores, mixing[layer][0])
    probs = softmax(np.where(allowed[None], scores, -np.inf))
    if mixing is not None:
        probs = np.einsum("hqk,hg->gqk", probs, mixing[layer][1])
    return probs


def scale_factor(allowed, key_size, options):
    """1/sqrt(d), times log(max(n, 16))/log(L) per query with the entropy-invariant scale, or
    max(1, log(n)/log(L)) with the log-n scale; L is ``scale_length`` (512)."""
    scale = 1 / np.sqrt(key_size)
    length = options.get("scale_length", 512)
    if options.get("entropy_invariant"):
        attended = np.maximum(allowed.sum(-1, keepdims=True), 16)
        scale = scale * np.log(attended) / np.log(length)
    if options.get("log_n"):
        attended = allowed.sum(-1, keepdims=True)
        scale = scale * np.maximum(np.log(attended) / np.log(length), 1.0)
    return scale


def dense(x, weights, name):
    y = x @ weights[name + "/kernel"]
    return y + weights[name + "/bias"] if name + "/bias" in weights else y


def encode(weights, token_ids, segment_ids, family, heads, key_size, head_size, eps=1e-12,
           activation="gelu", causal=False, options=None):
    """Sequence output and MLM probabilities for one unpadded example.

    ``options``: ``talking_heads`` (per layer, the (logits, probabilities) h×h mixing
    matrices), ``residual_scores`` (RealFormer), ``entropy_invariant`` (scale), ``positions_2d``
    ([n, 2]: 2D RoPE instead of the family's positions).
    """
    options = options or {}
    centred = family != "roformer_v2"
    act = gelu if activation == "gelu" else (lambda v: np.maximum(v, 0))
    x = weights["bert/embeddings/word_embeddings"][token_ids]
    x = x + weights["bert/embeddings/token_type_embeddings"][segment_ids]
    if family == "bert":
        x = x + weights["bert/embeddings/position_embeddings"][: len(token_ids)]
    x = layer_norm(x, weights, "bert/embeddings/LayerNorm", eps, centred)
    n = len(token_ids)
    layer = 0
    while f"bert/encoder/layer_{layer}/attention/self/query/kernel" in weights:
        prefix = f"bert/encoder/layer_{layer}"
        q = dense(x, weights, f"{prefix}/attention/self/query").reshape(n, heads, key_size)
        k = dense(x, weights, f"{prefix}/attention/self/key").reshape(n, heads, key_size)
        v = dense(x, weights, f"{prefix}/attention/self/value").reshape(n, heads, head_size)
        if options.get("positions_2d") is not None:
            q, k = rope_2d(q, options["positions_2d"]), rope_2d(k, options["positions_2d"])
        elif family != "bert" or options.get("rope_base"):
            base = options.get("rope_base") or 10000.0
            q, k = rope(q, base=base), rope(k, base=base)
        allowed = np.tril(np.ones((n, n), bool)) if causal else np.ones((n, n), bool)
        scores = np.einsum("qhd,khd->hqk", q, k) * scale_factor(allowed, key_size, options)
        if options.get("residual_scores") and layer > 0:
            scores = scores + previous
        previous = scores
        probs = attention_probabilities(scores, allowed, options, layer)
        o = np.einsum("hqk,khd->qhd", probs, v).reshape(n, heads * head_size)
        x = layer_norm(x + dense(o, weights, f"{prefix}/attention/output/dense"), weights,
                       f"{prefix}/attention/output/LayerNorm", eps, centred)
        f = dense(act(dense(x, weights, f"{prefix}/intermediate/dense")), weights,
                  f"{prefix}/output/dense")
        x = layer_norm(x + f, weights, f"{prefix}/output/LayerNorm", eps, centred)
        layer += 1
    embeddings = weights["bert/embeddings/word_embeddings"]
    if family == "roformer_v2":
        logits = x @ embeddings.T
    else:
        h = act(dense(x, weights, "cls/predictions/transform/dense"))
        h = layer_norm(h, weights, "cls/predictions/transform/LayerNorm", eps, True)
        logits = h @ embeddings.T + weights["cls/predictions/output_bias"]
    return x, softmax(logits)


def random_weights(family, vocab_size, hidden, layers, heads, key_size, head_size, intermediate,
                   max_position=64, seed=0):
    """Random Google-named weights for ``family`` (RoFormer-V2: no bias, gamma or beta)."""
    rng = np.random.default_rng(seed)
    with_params = family != "roformer_v2"

    def r(*shape):
        return rng.normal(0, 0.2, shape).astype("float32")

    w = {"bert/embeddings/word_embeddings": r(vocab_size, hidden),
         "bert/embeddings/token_type_embeddings": r(2, hidden)}
    if family == "bert":
        w["bert/embeddings/position_embeddings"] = r(max_position, hidden)

    def add_dense(name, n_in, n_out):
        w[name + "/kernel"] = r(n_in, n_out)
        if with_params:
            w[name + "/bias"] = r(n_out)

    def add_norm(name, dim):
        if with_params:
            w[name + "/gamma"] = 1 + r(dim)
            w[name + "/beta"] = r(dim)

    add_norm("bert/embeddings/LayerNorm", hidden)
    for i in range(layers):
        p = f"bert/encoder/layer_{i}"
        add_dense(f"{p}/attention/self/query", hidden, heads * key_size)
        add_dense(f"{p}/attention/self/key", hidden, heads * key_size)
        add_dense(f"{p}/attention/self/value", hidden, heads * head_size)
        add_dense(f"{p}/attention/output/dense", heads * head_size, hidden)
        add_norm(f"{p}/attention/output/LayerNorm", hidden)
        add_dense(f"{p}/intermediate/dense", hidden, intermediate)
        add_dense(f"{p}/output/dense", intermediate, hidden)
        add_norm(f"{p}/output/LayerNorm", hidden)
    if with_params:
        add_dense("cls/predictions/transform/dense", hidden, hidden)
        add_norm("cls/predictions/transform/LayerNorm", hidden)
        w["cls/predictions/output_bias"] = r(vocab_size)
    return w


# Gated attention units: weights keyed by the unit's own sub-paths ("i_dense/kernel"...).
def silu(x):
    return x / (1 + np.exp(-x))


def scale_offset(z, w, name):
    out = z * w[f"{name}/gamma"]
    return out + w[f"{name}/beta"] if f"{name}/beta" in w else out


def project(z, w, name):
    return rope(scale_offset(z, w, name)[:, None, :])[:, 0, :]


def split_units(x, w, units):
    h = silu(x @ w["i_dense/kernel"] + w.get("i_dense/bias", 0))
    return h[:, :units], h[:, units:2 * units], h[:, 2 * units:]


def numpy_gau(x, w, units, key_size, allowed, normalization, entropy=False):
    """One example: x [n, hidden], allowed [n, n] bool."""
    u, v, z = split_units(x, w, units)
    q, k = project(z, w, "q_scaleoffset"), project(z, w, "k_scaleoffset")
    a = q @ k.T / np.sqrt(key_size)
    n = allowed.sum(-1, keepdims=True)
    if normalization == "softmax":
        if entropy:
            a = a * np.log(np.maximum(n, 16)) / np.log(512)
        weights = softmax(np.where(allowed, a, -np.inf))
    else:
        weights = np.where(allowed, np.maximum(a, 0) ** 2, 0) / np.maximum(n, 1)
    return (u * (weights @ v)) @ w["o_dense/kernel"] + w.get("o_dense/bias", 0)


def numpy_flash(x, w, units, key_size, length, chunk, causal):
    """One example, query by query: relu² attention to the valid keys of the query's own chunk
    (earlier or same position when causal) plus the mean linear attention over the valid keys of
    the other chunks (earlier chunks when causal)."""
    u, v, z = split_units(x, w, units)
    qq, qk = project(z, w, "q_scaleoffset"), project(z, w, "k_scaleoffset")
    lq, lk = project(z, w, "lin_q_scaleoffset"), project(z, w, "lin_k_scaleoffset")
    out = np.zeros_like(v)
    for i in range(len(x)):
        own = i // chunk
        inside = [j for j in range(length) if j // chunk == own and (not causal or j <= i)]
        a = np.maximum(qq[i] @ qk[inside].T / np.sqrt(key_size), 0) ** 2 / len(inside)
        out[i] = a @ v[inside]
        others = [j for j in range(length)
                  if (j // chunk < own if causal else j // chunk != own)]
        if others:
            out[i] += (lq[i] @ lk[others].T) @ v[others] / len(others)
    return (u * out) @ w["o_dense/kernel"] + w.get("o_dense/bias", 0)
