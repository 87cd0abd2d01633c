"""Read checkpoints into ``{name: numpy array}`` without building any framework model.

Formats: Google TensorFlow checkpoints (``model.ckpt`` prefix, its ``.index`` file, or a directory
holding them), HF ``model.safetensors`` (single or sharded) and ``pytorch_model.bin`` (loaded with
``torch.load(weights_only=True)``, which refuses arbitrary pickled code).
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, List

import numpy as np

from bert4x.checkpoints.names import GOOGLE, HF


class CheckpointError(ValueError):
    """A checkpoint cannot be found, read, or does not fit the model."""


class Checkpoint:
    """Lazy name -> array access to one checkpoint; ``fmt`` is ``"google"`` or ``"hf"``."""

    def __init__(self, path: str, fmt: str, shapes: Dict[str, tuple], getter):
        self.path = path
        self.fmt = fmt
        self.shapes = shapes
        self._getter = getter

    @property
    def names(self) -> List[str]:
        return sorted(self.shapes)

    def get(self, name: str) -> np.ndarray:
        return np.asarray(self._getter(name))


def open_checkpoint(path) -> Checkpoint:
    """Open any supported checkpoint, deciding the format from the files at ``path``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for candidate in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
            if os.path.exists(os.path.join(path, candidate)):
                return open_checkpoint(os.path.join(path, candidate))
        return _open_google(path)
    if path.endswith(".safetensors"):
        return _open_safetensors([path], path)
    if path.endswith(".safetensors.index.json"):
        with open(path, encoding="utf-8") as handle:
            shards = sorted(set(json.load(handle)["weight_map"].values()))
        return _open_safetensors([os.path.join(os.path.dirname(path), s) for s in shards], path)
    if path.endswith(".bin") or path.endswith(".pt"):
        return _open_torch(path)
    return _open_google(re.sub(r"\.(index|meta|data-\d+-of-\d+)$", "", path))


def _open_google(path: str) -> Checkpoint:
    try:
        import tensorflow as tf
    except ImportError:  # JAX or PyTorch users need not install TensorFlow for anything else
        raise CheckpointError(
            f"{path}: reading a Google TF checkpoint needs TensorFlow (pip install tensorflow); "
            "or, where it is installed, `bert4x convert --to-hf DIR` writes model.safetensors, "
            "which every backend reads") from None

    prefix = path
    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            indexes = [f for f in os.listdir(path) if f.endswith(".index")]
            if len(indexes) != 1:
                raise CheckpointError(
                    f"{path}: no model.safetensors, pytorch_model.bin or single TF checkpoint found")
            prefix = os.path.join(path, indexes[0][: -len(".index")])
    if not os.path.exists(prefix + ".index"):
        raise CheckpointError(f"{path}: not a checkpoint (no {prefix}.index, and not a "
                              ".safetensors/.bin file)")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as error:  # TF raises several unrelated types for unreadable files
        raise CheckpointError(f"{prefix}: cannot read TensorFlow checkpoint ({error})") from error
    shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}
    return Checkpoint(prefix, GOOGLE, shapes, reader.get_tensor)


def _open_safetensors(files: List[str], path: str) -> Checkpoint:
    from safetensors import safe_open

    handles = {}
    shapes = {}
    for file in files:
        try:
            handle = safe_open(file, framework="numpy")
        except Exception as error:
            raise CheckpointError(f"{file}: cannot read safetensors file ({error})") from error
        for name in handle.keys():
            handles[name] = handle
            shapes[name] = tuple(handle.get_slice(name).get_shape())
    return Checkpoint(path, HF, shapes, lambda name: handles[name].get_tensor(name))


def _open_torch(path: str) -> Checkpoint:
    try:
        import torch
    except ImportError as error:
        raise CheckpointError(
            f"{path}: reading pytorch_model.bin needs PyTorch; install it or convert the file "
            "to model.safetensors") from error
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path}: cannot read as a weights-only PyTorch file ({error})") from error
    arrays = {name: tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
              for name, tensor in state.items()}
    return Checkpoint(path, HF, {n: a.shape for n, a in arrays.items()}, arrays.__getitem__)
