"""A layer that adds a loss computed from several tensors of the model.

Losses that need more than ``(y_true, y_pred)`` (labels fed as inputs, several heads, the
padding mask of another tensor) are written as a layer: subclass :class:`Loss`, write
``compute_loss(inputs, mask)``, call it on the tensors, compile with no ``loss`` and fit with
``(inputs, None)`` batches. This is bert4keras' ``Loss`` layer on Keras 3's ``add_loss``.
"""

import keras


@keras.saving.register_keras_serializable(package="bert4x")
class Loss(keras.layers.Layer):
    """Adds ``compute_loss(inputs, mask)`` to the model's losses and returns ``inputs`` (all of
    them, ``inputs[output_axis]``, or a list of them when ``output_axis`` is a list).

    ``mask`` holds the Keras padding mask of each input (None for inputs without one), e.g. the
    mask of a bert4x model's output, so the loss can average over real tokens.
    """

    def __init__(self, output_axis=None, **kwargs):
        super().__init__(**kwargs)
        self.output_axis = output_axis

    def compute_loss(self, inputs, mask=None):
        raise NotImplementedError("subclass Loss and write compute_loss(self, inputs, mask)")

    def call(self, inputs, mask=None):
        self.add_loss(self.compute_loss(inputs, mask))
        return self._select(inputs)

    def _select(self, items):
        if self.output_axis is None:
            return items
        if isinstance(self.output_axis, list):
            return [items[i] for i in self.output_axis]
        return items[self.output_axis]

    def compute_output_shape(self, input_shape):
        return self._select(input_shape)

    def compute_mask(self, inputs, mask=None):
        return None if mask is None else self._select(mask)

    def get_config(self):
        return {**super().get_config(), "output_axis": self.output_axis}
