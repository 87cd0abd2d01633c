"""What both optimizers need to know about variables and their gradients: which variables get
no weight decay, and how an embedding's sparse gradient becomes the dense one the update
formulas assume."""

#: Name fragments of variables that get no weight decay (biases, norm scales and offsets).
NO_DECAY = ("bias", "gamma", "beta")


def dense_gradients(grads):
    """``grads`` with TensorFlow's ``IndexedSlices`` (embedding gradients) made dense."""
    dense = []
    for gradient in grads:
        if gradient is not None and type(gradient).__name__ == "IndexedSlices":
            import tensorflow as tf
            gradient = tf.convert_to_tensor(gradient)
        dense.append(gradient)
    return dense
