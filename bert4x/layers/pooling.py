"""Sequence pooling that skips padding.

Keras 3's ``GlobalAveragePooling1D`` already averages over the positions its input's padding
mask keeps; its ``GlobalMaxPooling1D`` ignores the mask, so a padded position (hidden states of
padding are not zero) can win the max. This one takes the max over real positions only.
"""

import keras
from keras import ops

GlobalAveragePooling1D = keras.layers.GlobalAveragePooling1D


@keras.saving.register_keras_serializable(package="bert4x")
class GlobalMaxPooling1D(keras.layers.GlobalMaxPooling1D):
    """Max over the steps axis of the positions the padding mask keeps."""

    def call(self, inputs, mask=None):
        if mask is not None:
            steps_axis = 1 if self.data_format == "channels_last" else 2
            kept = ops.expand_dims(ops.cast(mask, "bool"), 3 - steps_axis)
            inputs = ops.where(kept, inputs, ops.cast(-float("inf"), inputs.dtype))
        return super().call(inputs)

    def compute_mask(self, inputs, mask=None):
        return None
