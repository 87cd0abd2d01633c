"""How a bert4x model's weights split over the devices of a model-parallel run (JAX).

``keras.distribution.ModelParallel`` places each variable by the regular expression of a
``LayoutMap`` that its whole path matches (``.*`` in front: a ``prefix=`` model's names too).
The split is Megatron's: the projections into heads and into the FFN's inner layer are cut by
output column, the projections back by input row, so each device computes its own heads and
its own slice of the FFN, and one all-reduce per block joins them. Embeddings are cut along
the hidden axis. Everything else (norms, biases of the projections back, heads' small weights)
is replicated. XLA inserts the communication; the
numbers are those of one device (tested).
"""

from __future__ import annotations

from typing import Mapping, Optional

import keras

#: (variable path pattern, axis of the device mesh per weight axis); "model" is the mesh axis.
_SPLITS = [
    (r".*Embedding-[A-Za-z]+/embeddings", (None, "model")),
    (r".*MultiHeadSelfAttention/(query|key|value)/kernel", (None, "model")),
    (r".*MultiHeadSelfAttention/(query|key|value)/bias", ("model",)),
    (r".*MultiHeadSelfAttention/output/kernel", ("model", None)),
    (r".*FeedForward/intermediate/kernel", (None, "model")),
    (r".*FeedForward/intermediate/bias", ("model",)),
    (r".*FeedForward/output/kernel", ("model", None)),
    (r".*GatedAttentionUnit/i_dense/kernel", (None, "model")),
    (r".*GatedAttentionUnit/o_dense/kernel", ("model", None)),
]


#: The config sizes that become split weight axes.
_SPLIT_SIZES = ("hidden_size", "embedding_size", "intermediate_size")


def model_parallel_layout(device_mesh: "keras.distribution.DeviceMesh",
                          model_axis: str = "model",
                          config: Optional[Mapping] = None) -> "keras.distribution.LayoutMap":
    """A ``LayoutMap`` for ``keras.distribution.ModelParallel`` over ``device_mesh``, whose
    axis ``model_axis`` splits the weights (its other axis, if any, splits the batch)::

        mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"])
        keras.distribution.set_distribution(keras.distribution.ModelParallel(
            layout_map=model_parallel_layout(mesh, config=config), batch_dim_name="batch"))
        model = build_transformer_model(config)   # built after: its weights are placed

    Every split weight axis must be a multiple of the mesh's ``model_axis`` size (hidden size,
    FFN size, GAU's expanded size); given the model's ``config`` (a dict), the sizes are checked
    here, with the size named, rather than when the weights are placed."""
    if model_axis not in device_mesh.axis_names:
        raise ValueError(f"the device mesh has axes {list(device_mesh.axis_names)}, "
                         f"not the model axis {model_axis!r}")
    devices = device_mesh.shape[list(device_mesh.axis_names).index(model_axis)]
    for name in _SPLIT_SIZES:
        size = (config or {}).get(name)
        if size is not None and size % devices:
            raise ValueError(f"{name}={size} does not split over the {devices} devices of the "
                             f"mesh axis {model_axis!r}: it must be a multiple of {devices}")
    layout = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes in _SPLITS:
        layout[pattern] = tuple(model_axis if axis == "model" else None for axis in axes)
    return layout
