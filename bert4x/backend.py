"""bert4keras' ``backend`` names, so that ``from bert4keras.backend import keras, K`` becomes
``from bert4x.backend import keras, K``.

``K`` is :mod:`bert4x.keras_backend` (Keras 2's backend functions on ``keras.ops``). The rest
are bert4keras' helpers, built on the pieces our layers use: the multilabel losses are
GlobalPointer's, RoPE rotates pairs with the same code as our attention.
"""

from __future__ import annotations

import keras
from keras import ops

from bert4x import keras_backend as K
from bert4x.layers.activations import set_gelu
from bert4x.layers.global_pointer import multilabel_crossentropy, sparse_multilabel_crossentropy
from bert4x.layers.rotary import rotary_frequencies, rotate_pairs

__all__ = ["K", "apply_rotary_position_embeddings", "batch_gather", "keras",
           "multilabel_categorical_crossentropy", "search_layer", "sequence_masking",
           "set_gelu", "sinusoidal_embeddings", "sparse_multilabel_categorical_crossentropy"]


def multilabel_categorical_crossentropy(y_true, y_pred):
    """bert4keras' name for :func:`bert4x.layers.multilabel_crossentropy`."""
    return multilabel_crossentropy(y_true, y_pred)


def sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=False):
    """bert4keras' name (and default ``mask_zero=False``) for
    :func:`bert4x.layers.sparse_multilabel_crossentropy`. With ``mask_zero`` bert4keras also
    drops class 0 from the negatives (ours keeps it there as a class that is never positive),
    so its score is set to -inf first."""
    if mask_zero:
        y_pred = ops.concatenate([ops.full_like(y_pred[..., :1], -float("inf")),
                                  y_pred[..., 1:]], axis=-1)
    return sparse_multilabel_crossentropy(y_true, y_pred, mask_zero=mask_zero)


def batch_gather(params, indices):
    """``params[b..., indices[b..., j], ...]``: gather along the first axis after the batch
    axes of ``indices`` (all its axes but the last), as ``tf.gather(batch_dims=...)``."""
    indices = ops.cast(indices, "int32")
    batch_axes = ops.ndim(indices) - 1
    batch_shape = ops.shape(indices)[:batch_axes]
    flat_params = ops.reshape(params, (-1, *ops.shape(params)[batch_axes:]))
    flat_indices = ops.reshape(indices, (-1, ops.shape(indices)[-1]))
    trailing = ops.ndim(flat_params) - 2
    expanded = ops.reshape(flat_indices, (*ops.shape(flat_indices), *([1] * trailing)))
    expanded = ops.broadcast_to(expanded, (*ops.shape(flat_indices),
                                           *ops.shape(flat_params)[2:]))
    gathered = ops.take_along_axis(flat_params, expanded, axis=1)
    return ops.reshape(gathered, (*batch_shape, *ops.shape(gathered)[1:]))


def sequence_masking(x, mask=None, value=0, axis=None, bias=None, return_mask=False):
    """Replace the positions of ``x`` where ``mask`` ([batch, n], 1 = keep) is 0 by ``value``
    along ``axis`` (default 1; a list masks several axes, e.g. both axes of a span matrix).
    ``bias`` is added to the kept positions, or, if boolean, and-ed into the mask."""
    value = {"-inf": -float("inf"), "inf": float("inf")}.get(value, value)
    if mask is None and bias is None:
        return (x, None) if return_mask else x
    if mask is None:
        if keras.backend.standardize_dtype(bias.dtype) == "bool":
            mask, x = bias, ops.where(bias, x, value)
        else:
            x = x + bias
        return (x, mask) if return_mask else x
    axes = [1] if axis is None else axis if isinstance(axis, list) else [axis]
    rank = ops.ndim(x)
    mask = ops.cast(mask, "bool")
    full = None
    for position in (a % rank for a in axes):
        shape = [1] * rank
        shape[0], shape[position] = -1, ops.shape(mask)[1]
        aligned = ops.reshape(mask, shape)
        full = aligned if full is None else ops.logical_and(full, aligned)
    if bias is not None and keras.backend.standardize_dtype(bias.dtype) == "bool":
        full, bias = ops.logical_and(full, bias), None
    x = ops.where(full, x if bias is None else x + bias, value)
    return (x, full) if return_mask else x


def sinusoidal_embeddings(pos, dim, base=10000):
    """[..., dim] sinusoids of positions ``pos`` as interleaved pairs (sin θ_i, cos θ_i)."""
    if dim % 2:
        raise ValueError(f"sinusoidal embeddings need an even dim, got {dim}")
    frequencies = ops.convert_to_tensor(rotary_frequencies(dim, base), keras.config.floatx())
    angles = ops.cast(pos, keras.config.floatx())[..., None] * frequencies
    pairs = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)
    return ops.reshape(pairs, (*ops.shape(angles)[:-1], dim))


def apply_rotary_position_embeddings(sinusoidal, *tensors):
    """RoPE with bert4keras' arguments: ``sinusoidal`` [batch, n, d] from
    :func:`sinusoidal_embeddings`, each tensor [batch, n, ..., d]."""
    if not tensors:
        raise ValueError("apply_rotary_position_embeddings needs at least one tensor")
    tensors = [ops.convert_to_tensor(tensor) for tensor in tensors]  # NumPy * torch fails
    rank = ops.ndim(tensors[0])
    shape = (*ops.shape(sinusoidal)[:2], *([1] * (rank - 3)), ops.shape(sinusoidal)[-1])
    sinusoidal = ops.reshape(sinusoidal, shape)
    cos = ops.repeat(sinusoidal[..., 1::2], 2, axis=-1)
    sin = ops.repeat(sinusoidal[..., ::2], 2, axis=-1)
    rotated = [tensor * cos + rotate_pairs(tensor) * sin for tensor in tensors]
    return rotated[0] if len(rotated) == 1 else rotated


def search_layer(inputs, name, exclude_from=None):
    """The layer called ``name`` that ``inputs`` (a layer, a model or a Keras tensor) comes
    from, searching back through the graph; None when there is none."""
    seen = set() if exclude_from is None else exclude_from
    pending = [inputs if isinstance(inputs, keras.layers.Layer)
               else inputs._keras_history.operation]
    while pending:
        layer = pending.pop(0)
        if layer.name == name:
            return layer
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            found = next((inner for inner in layer.layers if inner.name == name), None)
            if found is not None:
                return found
        for node in layer._inbound_nodes:
            pending.extend(parent.operation for parent in node.parent_nodes)
    return None
