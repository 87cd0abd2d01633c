"""Weight initialisations of the blog series, as Keras initializers.

A kernel of shape [m, n] maps m inputs to n outputs (Keras' Dense layout; leading axes of a
larger kernel multiply both). With entries of variance σ², one matmul multiplies the second
moment of each element by m·σ² going forward and by n·σ² going backward (the gradient), so a
square matrix keeps both at σ² = 1/m, and a non-square one can keep only one of them.

* :class:`DimensionAveraged` sets σ² = 1/√(m·n), the geometric mean of the two dimensions.
  Forward gain √(m/n) and backward gain √(n/m) multiply to exactly 1 in every layer, so a
  stack that returns to its starting width (d → 4d → d) keeps both moments. Xavier's
  σ² = 2/(m+n), the arithmetic mean, makes the product 4mn/(m+n)² < 1: that stack loses
  36% of each moment at 4×. (The choice of mean is the subject of 初始化方法中非方阵的维度平均策略思考,
  Su Jianlin, kexue.fm; ``docs/research-options.md`` says what we could verify of it.)
* :class:`DepthScaled` is RoFormer-V2's: σ² = 1/(fan·L) for L layers, so that a post-norm stack
  of L residual blocks starts with branches that together add about as much as one input.
  The fan follows bert4keras' rule: a matrix's first axis, unless that looks like a vocabulary
  (more than 10,000 rows) or a segment table (fewer than 10), when it is the second.
"""

import math

import keras


def kernel_fans(shape):
    """(fan_in, fan_out) of a kernel [..., m, n]: m and n times the product of leading axes."""
    if len(shape) < 2:
        return shape[0] if shape else 1, shape[0] if shape else 1
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class _ShapedVarianceScaling(keras.initializers.VarianceScaling):
    """VarianceScaling whose variance a subclass computes from the kernel's shape
    (:meth:`variance`); Keras' own sampling, truncation correction and seeding do the rest."""

    def variance(self, shape) -> float:
        raise NotImplementedError

    def __call__(self, shape, dtype=None):
        # VarianceScaling divides its scale by fan_in: hand it variance × fan_in.
        by_fan_in = keras.initializers.VarianceScaling(
            scale=self.variance(shape) * kernel_fans(shape)[0], mode="fan_in",
            distribution=self.distribution, seed=self.seed)
        return by_fan_in(shape, dtype)


@keras.saving.register_keras_serializable(package="bert4x")
class DimensionAveraged(_ShapedVarianceScaling):
    """Variance ``scale / sqrt(fan_in * fan_out)``: the geometric mean of the two fans, which
    makes a layer's forward and backward gains of the second moment multiply to 1."""

    def __init__(self, scale=1.0, distribution="truncated_normal", seed=None):
        super().__init__(scale=scale, mode="fan_in", distribution=distribution, seed=seed)

    def variance(self, shape) -> float:
        fan_in, fan_out = kernel_fans(shape)
        return self.scale / math.sqrt(fan_in * fan_out)

    def get_config(self):
        return {"scale": self.scale, "distribution": self.distribution, "seed": self._init_seed}


@keras.saving.register_keras_serializable(package="bert4x")
class DepthScaled(_ShapedVarianceScaling):
    """Truncated normal of variance ``1 / (fan * num_layers)`` (RoFormer-V2, as in bert4keras'
    ``RoFormerV2.initializer``), the fan chosen by the rule in the module docstring."""

    def __init__(self, num_layers, seed=None):
        super().__init__(scale=1.0 / num_layers, mode="fan_in", distribution="truncated_normal",
                         seed=seed)
        self.num_layers = num_layers

    def variance(self, shape) -> float:
        fan = shape[-1] if len(shape) == 2 and not 10 <= shape[0] <= 10000 else shape[0]
        return self.scale / fan

    def get_config(self):
        return {"num_layers": self.num_layers, "seed": self._init_seed}
