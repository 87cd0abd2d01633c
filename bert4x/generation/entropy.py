"""Entropy normalisation: the power transform that gives a distribution a chosen entropy.

Raising probabilities to a power and renormalising, q ∝ p^γ, is softmax(γ·s) on the logits s, a
temperature of 1/γ. It keeps the tokens' order, and it moves the entropy monotonically:

    H(γ) = log Z(γ) − γ·E_q[s],    dH/dγ = −γ·Var_q[s] ≤ 0,

from log K at γ = 0 (uniform over the K finite candidates) down to log T as γ → ∞ (uniform over the
T tied best). So exactly one γ gives any entropy in between. Sampling with that γ at every step
("entropy normalisation", Su Jianlin, 概率分布的熵归一化, kexue.fm) keeps the spread of the draw
fixed whether the model is sure or unsure, which one fixed temperature cannot.
"""

import numpy as np

#: The solver stops when the entropy is this close to its target (nats).
TOLERANCE = 1e-10
MAX_ITERATIONS = 200


def entropy(probs, axis=-1):
    """Shannon entropy in nats along ``axis``, with 0·log 0 = 0."""
    probs = np.asarray(probs, dtype="float64")
    safe = np.where(probs > 0, probs, 1.0)
    return -np.sum(probs * np.log(safe), axis=axis)


def _tempered(values, finite, gamma):
    """softmax(gamma · values) over the last axis where ``finite`` (0 elsewhere), and its
    entropy. ``values`` holds 0 where a logit is -inf, so no inf reaches the arithmetic."""
    scaled = np.where(finite, values * gamma, -np.inf)
    scaled = scaled - np.max(scaled, axis=-1, keepdims=True)
    weights = np.where(finite, np.exp(np.where(finite, scaled, 0.0)), 0.0)
    probs = weights / weights.sum(axis=-1, keepdims=True)
    return probs, entropy(probs)


def _finite_part(logits):
    """(logits with -inf replaced by 0, mask of the finite ones), in float64."""
    logits = np.asarray(logits, dtype="float64")
    finite = np.isfinite(logits)
    if np.any(~finite.any(axis=-1)):
        raise ValueError("a row of logits has no finite value: nothing can be drawn from it")
    return np.where(finite, logits, 0.0), finite


def entropy_power(logits, target):
    """The power γ with H(softmax(γ·logits)) = ``target`` (nats), per row of ``logits`` [..., V].

    -inf logits are excluded candidates. A target at or above log K (K finite candidates) gives
    γ = 0, the uniform distribution, which is as spread as those candidates can be; a target at
    or below the entropy of the tied best gives γ = inf. Solved by Newton steps on log γ, kept
    inside a shrinking bracket by bisection, in float64.
    """
    target = np.broadcast_to(np.asarray(target, dtype="float64"), np.shape(logits)[:-1])
    if not np.all(np.isfinite(target)) or np.any(target < 0):
        raise ValueError(f"the target entropy must be a finite number of nats >= 0, got {target}")
    values, finite = _finite_part(logits)
    candidates = finite.sum(axis=-1)
    best = np.max(np.where(finite, values, -np.inf), axis=-1, keepdims=True)
    ties = np.sum(finite & (values == best), axis=-1)
    # Spread of the logits sets the scale of γ: log γ is searched around -log(spread).
    spread = np.max(best - values, axis=-1)
    centre = -np.log(np.where(spread > 0, spread, 1.0))
    low, high = centre - 40.0, centre + 40.0
    log_gamma = centre.copy()
    for _ in range(MAX_ITERATIONS):
        gamma = np.exp(log_gamma)[..., None]
        probs, current = _tempered(values, finite, gamma)
        gap = current - target
        if np.all(np.abs(gap) < TOLERANCE):
            break
        # H falls as log γ grows: too much entropy means γ is too small.
        low = np.where(gap > 0, log_gamma, low)
        high = np.where(gap > 0, high, log_gamma)
        mean = np.sum(probs * values, axis=-1, keepdims=True)
        variance = np.sum(probs * (values - mean) ** 2, axis=-1)
        slope = -(gamma[..., 0] ** 2) * variance  # dH / d log γ
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = log_gamma - gap / slope
        inside = np.isfinite(newton) & (newton > low) & (newton < high)
        log_gamma = np.where(inside, newton, (low + high) / 2)
    gamma = np.exp(log_gamma)
    gamma = np.where(target >= np.log(candidates), 0.0, gamma)
    return np.where(target <= np.log(ties), np.inf, gamma)


def normalize_entropy(logits, target):
    """softmax(γ·logits) with γ from :func:`entropy_power`: the distribution of the same token
    order whose entropy is ``target`` nats (or as close as the candidates allow)."""
    gamma = entropy_power(logits, target)[..., None]
    values, finite = _finite_part(logits)
    best = np.max(np.where(finite, values, -np.inf), axis=-1, keepdims=True)
    # γ = inf: all mass on the tied best, which softmax(inf · s) cannot compute.
    argmax_only = np.where(finite & (values == best), 1.0, 0.0)
    probs, _ = _tempered(values, finite, np.where(np.isinf(gamma), 1.0, gamma))
    peaked = argmax_only / argmax_only.sum(axis=-1, keepdims=True)
    return np.where(np.isinf(gamma), peaked, probs)
